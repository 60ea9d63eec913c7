//! The web console: `/_/ui/…`, and `GET /upload` (its deploy page, the
//! path the C FaaS served its upload form on).
//!
//! Owns the console's files, embedded in the binary from `console/` (no
//! build step, nothing fetched at run time) and the headers they are
//! served with. The console itself is a client of the control API and the
//! admin reads, like the CLI: this module only hands out bytes. Must never
//! read the disk or answer anything but GET and HEAD.

/// The console's home; `/_/ui` and `/_/ui/` are its page.
pub const PREFIX: &str = "/_/ui";
/// Answers with the console, which opens its deploy page there.
pub const UPLOAD_PATH: &str = "/upload";

/// The headers every console answer carries besides its content type:
/// its scripts come only from itself, nothing is loaded from another
/// origin, and no inline script runs.
pub const HEADERS: [(&str, &str); 4] = [
    (
        "content-security-policy",
        "default-src 'self'; img-src 'self' data:; object-src 'none'; frame-ancestors 'none'; base-uri 'none'",
    ),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
    // Small and embedded: revalidating costs a request, and an upgraded
    // binary's console is never mixed with an old one's.
    ("cache-control", "no-cache"),
];

/// One embedded file.
pub struct Asset {
    pub content_type: &'static str,
    pub body: &'static [u8],
}

const INDEX: Asset = Asset {
    content_type: "text/html; charset=utf-8",
    body: include_bytes!("../../console/index.html"),
};
const SCRIPT: Asset = Asset {
    content_type: "text/javascript; charset=utf-8",
    body: include_bytes!("../../console/app.js"),
};
const STYLE: Asset = Asset {
    content_type: "text/css; charset=utf-8",
    body: include_bytes!("../../console/app.css"),
};

/// The file served at `path`, if `path` is the console's.
pub fn asset(path: &str) -> Option<&'static Asset> {
    match path {
        UPLOAD_PATH => Some(&INDEX),
        _ => match path.strip_prefix(PREFIX)? {
            "" | "/" | "/index.html" => Some(&INDEX),
            "/app.js" => Some(&SCRIPT),
            "/app.css" => Some(&STYLE),
            _ => None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_the_script_and_the_style_are_embedded() {
        for path in ["/_/ui", "/_/ui/", "/upload"] {
            let page = asset(path).map(|a| a.body).unwrap_or_default();
            assert!(page.starts_with(b"<!doctype html>"), "{path}");
        }
        let script = asset("/_/ui/app.js").map(|a| a.content_type);
        assert_eq!(script, Some("text/javascript; charset=utf-8"));
        assert!(asset("/_/ui/app.css").is_some());
        assert!(asset("/_/ui/secret").is_none());
        assert!(asset("/_/uix").is_none());
    }

    #[test]
    fn every_file_the_page_names_is_served() {
        let page = String::from_utf8_lossy(INDEX.body);
        for reference in page.split('"').filter(|s| s.starts_with("/_/ui/")) {
            let path = reference.split('#').next().unwrap_or(reference);
            assert!(asset(path).is_some(), "{reference} is named but not served");
        }
    }
}
