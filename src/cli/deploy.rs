//! `corefn deploy PATH`: a directory becomes a .tar.gz archive built in
//! memory (with its `corefn.json`, the flags merged into it), a single
//! file a JSON deploy (`code` or `code_base64`, `filename`); either is one
//! `POST /_/api/v1/functions`, shown as three steps.
//!
//! Owns: packaging and the mapping of flags to the deploy's fields
//! (`name`, `runtime`, `routes`, `config`). May call: [`super::client`],
//! the upload bounds of [`crate::registry::upload`] (a directory the
//! server would refuse is refused here, before it is sent) and the
//! function-name rule. Must never follow a symbolic link or read outside
//! the directory it was given.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use clap::Args;
use serde_json::{json, Map, Value};

use super::client::{self, Body, ClientError, Request, DEPLOY_TIMEOUT};
use super::progress::Steps;
use super::{Exit, Target};
use crate::http::rules::is_function_name;
use crate::registry::upload::{
    ENTRIES_MAX, FILE_BYTES_MAX, MANIFEST_PATH, PATH_BYTES_MAX, UNPACKED_BYTES_MAX,
};

/// Directories left out of a package: version control and bytecode
/// caches, which the server would only store.
const SKIPPED_DIRS: &[&str] = &[".git", "__pycache__"];
/// Runtimes the server knows (checked here so a typo is a usage error).
const RUNTIMES: &[&str] = &["wasm", "native", "exec", "python", "node", "php"];

#[derive(Debug, Clone, Args)]
pub struct DeployArgs {
    /// A directory (packed with its files and corefn.json) or one file.
    pub path: PathBuf,
    /// The function's name (default: corefn.json's, else the directory's or
    /// the file's name).
    #[arg(long)]
    pub name: Option<String>,
    /// The runtime (default: what the files say: main.py, index.js, .c, …).
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(RUNTIMES))]
    pub runtime: Option<String>,
    /// A route of its own besides /fn/NAME, as METHOD:/path; repeatable.
    #[arg(long = "route", value_name = "METHOD:/path")]
    pub routes: Vec<String>,
    /// An environment variable of the function; repeatable.
    #[arg(long = "env", value_name = "K=V", value_parser = parse_env)]
    pub env: Vec<(String, String)>,
    /// A call's time limit, in milliseconds.
    #[arg(long)]
    pub timeout_ms: Option<u64>,
    /// A call's memory limit, in MiB.
    #[arg(long)]
    pub memory_mb: Option<u64>,
    /// Requests per second, and optionally the burst above it.
    #[arg(long, value_name = "RPS[/BURST]", value_parser = parse_rate_limit)]
    pub rate_limit: Option<RateLimitArg>,
    /// `key`: callers need an invoke key; `public`: anyone may call.
    #[arg(long, value_parser = ["key", "public"])]
    pub auth: Option<String>,
    #[command(flatten)]
    pub target: Target,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimitArg {
    rps: f64,
    burst: Option<u32>,
}

fn parse_env(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_string(), value.to_string())),
        _ => Err(format!("{text:?} is not K=V")),
    }
}

fn parse_rate_limit(text: &str) -> Result<RateLimitArg, String> {
    let (rps, burst) = match text.split_once('/') {
        Some((rps, burst)) => (rps, Some(burst)),
        None => (text, None),
    };
    let rps: f64 = rps
        .parse()
        .ok()
        .filter(|r: &f64| r.is_finite() && *r > 0.0)
        .ok_or_else(|| format!("{text:?}: requests per second must be a positive number"))?;
    let burst = burst
        .map(|b| {
            b.parse::<u32>()
                .ok()
                .filter(|b| *b > 0)
                .ok_or_else(|| format!("{text:?}: the burst must be a whole number above 0"))
        })
        .transpose()?;
    Ok(RateLimitArg { rps, burst })
}

impl DeployArgs {
    /// The flags as deploy fields; each overrides the same field of a
    /// corefn.json, `env` key by key.
    fn merge_into(&self, fields: &mut Map<String, Value>) -> Result<(), ClientError> {
        if let Some(name) = &self.name {
            fields.insert("name".into(), name.clone().into());
        }
        if let Some(runtime) = &self.runtime {
            fields.insert("runtime".into(), runtime.clone().into());
        }
        if !self.routes.is_empty() {
            fields.insert("routes".into(), json!(self.routes));
        }
        let config = fields
            .entry("config")
            .or_insert_with(|| Value::Object(Map::new()));
        let Value::Object(config) = config else {
            return Err(ClientError::Usage(
                "corefn.json: \"config\" must be an object".into(),
            ));
        };
        if let Some(ms) = self.timeout_ms {
            config.insert("timeout_ms".into(), ms.into());
        }
        if let Some(mb) = self.memory_mb {
            config.insert("memory_mb".into(), mb.into());
        }
        if let Some(limit) = self.rate_limit {
            let mut value = json!({ "rps": limit.rps });
            if let Some(burst) = limit.burst {
                value["burst"] = burst.into();
            }
            config.insert("rate_limit".into(), value);
        }
        if let Some(auth) = &self.auth {
            config.insert("auth".into(), auth.clone().into());
        }
        if !self.env.is_empty() {
            let env = config
                .entry("env")
                .or_insert_with(|| Value::Object(Map::new()));
            let Value::Object(env) = env else {
                return Err(ClientError::Usage(
                    "corefn.json: \"config.env\" must be an object".into(),
                ));
            };
            for (key, value) in &self.env {
                env.insert(key.clone(), value.clone().into());
            }
        }
        if config.is_empty() {
            fields.remove("config");
        }
        Ok(())
    }
}

/// What goes up: a body, its type, and what the packaging step says.
struct Package {
    name: String,
    content_type: &'static str,
    body: Vec<u8>,
    summary: String,
}

pub fn run(args: &DeployArgs) -> Result<Exit, ClientError> {
    let client = args.target.client()?;
    let mut steps = Steps::new(3, args.target.json);
    steps.start(1, &format!("Packaging {}", args.path.display()));
    let package = match package(args) {
        Ok(package) => package,
        Err(error) => {
            steps.fail();
            return Err(error);
        }
    };
    steps.finish(Some(&package.summary));
    steps.start(
        2,
        &format!("Uploading {}", human_bytes(package.body.len() as u64)),
    );
    let len = package.body.len() as u64;
    let answer = {
        let mut upload = Upload {
            bytes: std::io::Cursor::new(package.body),
            on_sent: Some(|| steps.start(3, "Compiling")),
        };
        let mut request = Request::new("POST", format!("{}functions", client::API_PREFIX));
        request
            .headers
            .push(("content-type".into(), package.content_type.to_string()));
        request.body = Some(Body::Reader(&mut upload, len));
        request.timeout = Some(DEPLOY_TIMEOUT);
        client.send(request).and_then(client::json_answer)
    };
    let answer = match answer {
        Ok(answer) => answer,
        Err(error) => {
            steps.fail();
            return Err(error);
        }
    };
    let version = answer["version"].as_u64().unwrap_or(0);
    let built = match answer["built_with"].as_str() {
        Some(tool) => format!("checked with {tool}, version {version}"),
        None => format!("version {version}"),
    };
    steps.finish(Some(&built));
    drop(steps);
    if args.target.json {
        super::out_json(&answer);
        return Ok(Exit::Ok);
    }
    let name = answer["name"].as_str().unwrap_or(&package.name);
    super::out(&format!(
        "Live at {} (version {version})\n  also {}/fn/{name}\n",
        host_url(client.base(), name),
        client.base()
    ));
    Ok(Exit::Ok)
}

/// The body streamed to the server, saying when its last byte has gone
/// out (from then on the server is checking or compiling).
struct Upload<F: FnMut()> {
    bytes: std::io::Cursor<Vec<u8>>,
    on_sent: Option<F>,
}

impl<F: FnMut()> Read for Upload<F> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.bytes.read(buf)?;
        if self.bytes.position() as usize >= self.bytes.get_ref().len() {
            if let Some(mut on_sent) = self.on_sent.take() {
                on_sent();
            }
        }
        Ok(n)
    }
}

/// `http://NAME.localhost:PORT/` for a server on this machine (every
/// function answers on its own host name); `BASE/fn/NAME/` elsewhere.
fn host_url(base: &str, name: &str) -> String {
    let Ok(uri) = base.parse::<ureq::http::Uri>() else {
        return format!("{base}/fn/{name}/");
    };
    let local = matches!(
        uri.host(),
        Some("127.0.0.1" | "localhost" | "[::1]" | "::1" | "0.0.0.0")
    );
    if !local {
        return format!("{base}/fn/{name}/");
    }
    match uri.port_u16() {
        Some(port) => format!("http://{name}.localhost:{port}/"),
        None => format!("http://{name}.localhost/"),
    }
}

fn package(args: &DeployArgs) -> Result<Package, ClientError> {
    let metadata = std::fs::metadata(&args.path)
        .map_err(|e| ClientError::Usage(format!("{}: {e}", args.path.display())))?;
    if metadata.is_dir() {
        package_dir(args)
    } else {
        package_file(args)
    }
}

/// One file of a package.
struct PackedFile {
    /// Relative, `/`-separated.
    path: String,
    bytes: Vec<u8>,
    executable: bool,
}

fn package_dir(args: &DeployArgs) -> Result<Package, ClientError> {
    let root = &args.path;
    let mut files = Vec::new();
    let mut total_bytes = 0u64;
    collect(root, root, &mut files, &mut total_bytes)?;
    files.sort_by(|a, b| a.path.cmp(&b.path));
    let mut fields = match files.iter().position(|f| f.path == MANIFEST_PATH) {
        Some(i) => {
            let manifest = files.remove(i);
            match serde_json::from_slice::<Value>(&manifest.bytes) {
                Ok(Value::Object(map)) => map,
                Ok(_) => {
                    return Err(ClientError::Usage(format!(
                        "{}: {MANIFEST_PATH} must be a JSON object",
                        root.display()
                    )))
                }
                Err(e) => {
                    return Err(ClientError::Usage(format!(
                        "{}: {MANIFEST_PATH} is not valid JSON: {e}",
                        root.display()
                    )))
                }
            }
        }
        None => Map::new(),
    };
    args.merge_into(&mut fields)?;
    let name = match fields.get("name") {
        Some(Value::String(name)) => name.clone(),
        Some(_) => {
            return Err(ClientError::Usage(format!(
                "{MANIFEST_PATH}: \"name\" must be a string"
            )))
        }
        None => {
            let name = default_name(root).ok_or_else(|| {
                ClientError::Usage(format!(
                    "{}: give the function a name with --name (or \"name\" in {MANIFEST_PATH})",
                    root.display()
                ))
            })?;
            fields.insert("name".into(), name.clone().into());
            name
        }
    };
    let file_count = files.len();
    // The flags travel inside the archive: the server reads an archive's
    // fields from its corefn.json, and only from there.
    files.push(PackedFile {
        path: MANIFEST_PATH.into(),
        bytes: Value::Object(fields).to_string().into_bytes(),
        executable: false,
    });
    let body = tar_gz(&files)
        .map_err(|e| ClientError::Usage(format!("cannot pack {}: {e}", root.display())))?;
    Ok(Package {
        name,
        content_type: "application/gzip",
        summary: format!(
            "{file_count} file{}, {}",
            if file_count == 1 { "" } else { "s" },
            human_bytes(total_bytes)
        ),
        body,
    })
}

/// Every file under `dir`, bounded as the server bounds an archive.
fn collect(
    root: &Path,
    dir: &Path,
    files: &mut Vec<PackedFile>,
    total_bytes: &mut u64,
) -> Result<(), ClientError> {
    let refuse = |path: &Path, why: &str| ClientError::Usage(format!("{}: {why}", path.display()));
    let entries = std::fs::read_dir(dir).map_err(|e| refuse(dir, &e.to_string()))?;
    let mut entries: Vec<_> = entries
        .collect::<Result<_, _>>()
        .map_err(|e| refuse(dir, &e.to_string()))?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        let kind = entry
            .file_type()
            .map_err(|e| refuse(&path, &e.to_string()))?;
        if kind.is_symlink() {
            return Err(refuse(
                &path,
                "is a symbolic link; a package holds only plain files (copy the target in)",
            ));
        }
        if kind.is_dir() {
            let skipped = entry
                .file_name()
                .to_str()
                .is_some_and(|n| SKIPPED_DIRS.contains(&n));
            if !skipped {
                collect(root, &path, files, total_bytes)?;
            }
            continue;
        }
        if !kind.is_file() {
            return Err(refuse(
                &path,
                "is not a plain file (a socket, FIFO or device cannot be packed)",
            ));
        }
        let relative = path
            .strip_prefix(root)
            .ok()
            .and_then(|p| p.to_str())
            .map(str::to_string)
            .ok_or_else(|| refuse(&path, "its name is not UTF-8"))?;
        if relative.len() > PATH_BYTES_MAX {
            return Err(refuse(
                &path,
                &format!("its path is longer than {PATH_BYTES_MAX} bytes"),
            ));
        }
        // One entry stays free for corefn.json.
        if files.len() + 1 >= ENTRIES_MAX {
            return Err(refuse(
                root,
                &format!(
                    "more than {} files; a function holds at most that many",
                    ENTRIES_MAX - 1
                ),
            ));
        }
        let metadata = entry
            .metadata()
            .map_err(|e| refuse(&path, &e.to_string()))?;
        if metadata.len() > FILE_BYTES_MAX {
            return Err(refuse(
                &path,
                &format!("larger than {}", human_bytes(FILE_BYTES_MAX)),
            ));
        }
        *total_bytes += metadata.len();
        if *total_bytes > UNPACKED_BYTES_MAX {
            return Err(refuse(
                root,
                &format!(
                    "more than {} of files; a function holds at most that much",
                    human_bytes(UNPACKED_BYTES_MAX)
                ),
            ));
        }
        let bytes = std::fs::read(&path).map_err(|e| refuse(&path, &e.to_string()))?;
        files.push(PackedFile {
            path: relative,
            bytes,
            executable: metadata.permissions().mode() & 0o111 != 0,
        });
    }
    Ok(())
}

/// The files as a .tar.gz, in the given order, with fixed owners and
/// times: the same directory packs to the same bytes.
fn tar_gz(files: &[PackedFile]) -> std::io::Result<Vec<u8>> {
    let encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut builder = tar::Builder::new(encoder);
    for file in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(file.bytes.len() as u64);
        header.set_mode(if file.executable { 0o755 } else { 0o644 });
        header.set_mtime(0);
        header.set_entry_type(tar::EntryType::Regular);
        builder.append_data(&mut header, &file.path, file.bytes.as_slice())?;
    }
    builder.into_inner()?.finish()
}

fn package_file(args: &DeployArgs) -> Result<Package, ClientError> {
    let path = &args.path;
    let bytes =
        std::fs::read(path).map_err(|e| ClientError::Usage(format!("{}: {e}", path.display())))?;
    let filename = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| ClientError::Usage(format!("{}: its name is not UTF-8", path.display())))?
        .to_string();
    let mut fields = Map::new();
    args.merge_into(&mut fields)?;
    if !fields.contains_key("runtime") {
        let runtime = runtime_of(&filename).ok_or_else(|| {
            ClientError::Usage(format!(
                "{}: say which runtime runs it with --runtime ({})",
                path.display(),
                RUNTIMES.join(", ")
            ))
        })?;
        fields.insert("runtime".into(), runtime.into());
    }
    let name = match fields.get("name").and_then(Value::as_str) {
        Some(name) => name.to_string(),
        None => {
            let name = default_name(path).ok_or_else(|| {
                ClientError::Usage(format!(
                    "{}: give the function a name with --name",
                    path.display()
                ))
            })?;
            fields.insert("name".into(), name.clone().into());
            name
        }
    };
    let size = bytes.len() as u64;
    match String::from_utf8(bytes) {
        Ok(text) => fields.insert("code".into(), text.into()),
        Err(binary) => fields.insert(
            "code_base64".into(),
            base64::engine::general_purpose::STANDARD
                .encode(binary.as_bytes())
                .into(),
        ),
    };
    fields.insert("filename".into(), filename.clone().into());
    Ok(Package {
        name,
        content_type: "application/json",
        body: Value::Object(fields).to_string().into_bytes(),
        summary: format!("{filename}, {}", human_bytes(size)),
    })
}

/// The runtime a file's extension implies; C and C++ compile to wasm (the
/// sandboxed choice), as the API does.
fn runtime_of(filename: &str) -> Option<&'static str> {
    let extension = filename.rsplit_once('.')?.1.to_ascii_lowercase();
    Some(match extension.as_str() {
        "py" => "python",
        "js" | "cjs" | "mjs" => "node",
        "php" => "php",
        "wasm" | "wat" | "c" | "cc" | "cpp" | "cxx" => "wasm",
        "so" => "native",
        "sh" => "exec",
        _ => return None,
    })
}

/// A directory's or file's own name (without extension) when it is a
/// valid function name (`greet/` → `greet`, `hello_world.py` →
/// `hello-world`).
fn default_name(path: &Path) -> Option<String> {
    let canonical = std::fs::canonicalize(path).ok();
    let path = canonical.as_deref().unwrap_or(path);
    let stem = if path.is_dir() {
        path.file_name()?.to_str()?
    } else {
        path.file_stem()?.to_str()?
    };
    let name = stem.to_ascii_lowercase().replace('_', "-");
    is_function_name(&name).then_some(name)
}

pub fn human_bytes(bytes: u64) -> String {
    const KIB: f64 = 1024.0;
    let b = bytes as f64;
    if b < KIB {
        format!("{bytes} B")
    } else if b < KIB * KIB {
        format!("{:.1} KiB", b / KIB)
    } else {
        format!("{:.1} MiB", b / KIB / KIB)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limits_parse_with_and_without_a_burst() {
        assert_eq!(
            parse_rate_limit("100/200"),
            Ok(RateLimitArg {
                rps: 100.0,
                burst: Some(200)
            })
        );
        assert_eq!(
            parse_rate_limit("2.5"),
            Ok(RateLimitArg {
                rps: 2.5,
                burst: None
            })
        );
        assert!(parse_rate_limit("0").is_err());
        assert!(parse_rate_limit("10/x").is_err());
    }

    #[test]
    fn local_servers_get_host_urls() {
        assert_eq!(
            host_url("http://127.0.0.1:8080", "greet"),
            "http://greet.localhost:8080/"
        );
        assert_eq!(
            host_url("http://10.0.0.5:8080", "greet"),
            "http://10.0.0.5:8080/fn/greet/"
        );
    }

    #[test]
    fn a_packed_directory_unpacks_on_the_server_side() {
        let files = vec![
            PackedFile {
                path: "main.py".into(),
                bytes: b"import helper\n".to_vec(),
                executable: false,
            },
            PackedFile {
                path: "lib/helper.py".into(),
                bytes: b"X = 1\n".to_vec(),
                executable: false,
            },
            PackedFile {
                path: MANIFEST_PATH.into(),
                bytes: br#"{"name":"x"}"#.to_vec(),
                executable: false,
            },
        ];
        let body = tar_gz(&files).expect("pack");
        let kind = crate::registry::upload::detect(Some("application/gzip"), &body)
            .expect("detected as an archive");
        let archive = crate::registry::upload::unpack(
            &body,
            kind,
            &crate::registry::upload::UploadLimits::default(),
        )
        .expect("unpacks");
        assert!(archive.file("lib/helper.py").is_some());
        assert_eq!(archive.manifest, Some(json!({"name": "x"})));
    }
}
