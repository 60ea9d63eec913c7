//! The two upload forms besides JSON: a `multipart/form-data` body (a
//! `code` file part, a `descriptor` JSON part and plain text fields, the
//! form a C FaaS CLI sends) and an archive (`.zip` or `.tar.gz`) of a
//! function's files. This module only parses: it turns bytes that are
//! already in memory into [`MultipartUpload`] or [`Archive`] values and
//! picks an archive's entry point by convention ([`entry_point`]).
//!
//! It owns the limits of that parsing ([`UploadLimits`], defaults from the
//! constants below) and the one error type, [`UploadError`]. It may call
//! the parsing crates (multer, zip, tar, flate2), `serde_json` and
//! [`check_name`]. It must never touch the file system, spawn anything or
//! look at the database: archives are unpacked into memory and returned as
//! bytes, and the caller decides what to store where. Everything in an
//! upload is untrusted: every malformed or hostile input is an
//! [`UploadError`], never a panic, and declared sizes are never believed
//! (reading stops as soon as a running total passes its limit).
//!
//! Archive entries must be regular files or directories with relative
//! paths that stay inside the root (no `..`, no absolute paths, no links,
//! no devices, no duplicates). Backslashes count as separators, so a
//! Windows-made `..\x` is refused like `../x`. Entries under `__MACOSX/`
//! (the resource forks macOS Finder adds to a zip) are counted but
//! dropped. When every file sits under one top-level directory
//! (`greet/index.js`, `greet/lib/x.js`), that directory is stripped.

use std::cell::Cell;
use std::collections::{BTreeMap, HashSet};
use std::io::{self, Read};
use std::rc::Rc;

use serde_json::Value;
use thiserror::Error;

use crate::registry::functions::check_name;
use crate::runtimes::descriptor::{Runtime, DESCRIPTOR_BYTES_MAX};

#[cfg(test)]
mod tests;

/// Total bytes an archive may unpack to.
pub const UNPACKED_BYTES_MAX: u64 = 64 * 1024 * 1024;
/// Bytes of one file in an archive.
pub const FILE_BYTES_MAX: u64 = 64 * 1024 * 1024;
/// Entries of an archive: files, directories and skipped headers.
pub const ENTRIES_MAX: usize = 1000;
/// Bytes of one normalised path in an archive.
pub const PATH_BYTES_MAX: usize = 512;
/// Unpacked bytes per input byte, over the whole archive, once past
/// [`RATIO_FREE_BYTES`].
pub const COMPRESSION_RATIO_MAX: u64 = 200;
/// Unpacked bytes that are never held against the compression ratio (a
/// tiny archive of a few small files may compress very well).
pub const RATIO_FREE_BYTES: u64 = 1024 * 1024;
/// Parts of one multipart body.
pub const PARTS_MAX: usize = 32;
/// Header bytes of one multipart part (names, values and their `: ` and
/// CRLF).
pub const PART_HEADER_BYTES_MAX: usize = 8 * 1024;
/// Bytes of the `code` part.
pub const CODE_BYTES_MAX: u64 = 64 * 1024 * 1024;
/// Bytes of the `descriptor` part: the descriptor's own limit.
pub const DESCRIPTOR_PART_BYTES_MAX: u64 = DESCRIPTOR_BYTES_MAX as u64;
/// Bytes of any other (plain text) field.
pub const FIELD_BYTES_MAX: u64 = 4 * 1024;
/// Longest multipart boundary (RFC 2046, section 5.1.1).
pub const BOUNDARY_BYTES_MAX: usize = 70;
/// Tar stream bytes allowed per entry beyond its content: the header
/// block, padding to a block and a pax or GNU long-name header.
const TAR_OVERHEAD_PER_ENTRY: u64 = 4 * 1024;
/// Tar stream bytes allowed beyond the entries: the end-of-archive blocks
/// and the padding of the last record.
const TAR_OVERHEAD_FIXED: u64 = 20 * 1024;
/// Characters of an input path or name quoted in an error.
const QUOTED_CHARS_MAX: usize = 200;
/// The archive file that overrides the conventions.
pub const MANIFEST_PATH: &str = "corefn.json";

/// The bounds of parsing one upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadLimits {
    pub unpacked_bytes_max: u64,
    pub file_bytes_max: u64,
    pub entries_max: usize,
    pub path_bytes_max: usize,
    pub compression_ratio_max: u64,
    pub parts_max: usize,
    pub part_header_bytes_max: usize,
    pub code_bytes_max: u64,
    pub descriptor_bytes_max: u64,
    pub field_bytes_max: u64,
}

impl Default for UploadLimits {
    fn default() -> Self {
        UploadLimits {
            unpacked_bytes_max: UNPACKED_BYTES_MAX,
            file_bytes_max: FILE_BYTES_MAX,
            entries_max: ENTRIES_MAX,
            path_bytes_max: PATH_BYTES_MAX,
            compression_ratio_max: COMPRESSION_RATIO_MAX,
            parts_max: PARTS_MAX,
            part_header_bytes_max: PART_HEADER_BYTES_MAX,
            code_bytes_max: CODE_BYTES_MAX,
            descriptor_bytes_max: DESCRIPTOR_PART_BYTES_MAX,
            field_bytes_max: FIELD_BYTES_MAX,
        }
    }
}

/// What an upload is refused for. Paths and names are quoted as they came
/// (normalised where that is said), cut to a few hundred characters.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum UploadError {
    #[error("content type {content_type:?} is not multipart/form-data")]
    NotMultipart { content_type: String },
    #[error("the multipart content type has no boundary parameter")]
    NoBoundary,
    #[error("the multipart boundary must be 1 to {BOUNDARY_BYTES_MAX} characters")]
    InvalidBoundary,
    #[error("the multipart body ends inside a part or before its closing boundary: {0}")]
    Unterminated(String),
    #[error("more than {limit} parts in the multipart body")]
    TooManyParts { limit: usize },
    #[error("a part's headers exceed {limit_bytes} bytes")]
    PartHeadersTooLarge { limit_bytes: usize },
    #[error("a part has no Content-Disposition: form-data header with a name")]
    UnnamedPart,
    #[error("the field {name:?} appears more than once")]
    DuplicateField { name: String },
    #[error("the field {name:?} carries a file; only `code` and `descriptor` may")]
    UnexpectedFile { name: String },
    #[error("the field {name:?} exceeds {limit_bytes} bytes")]
    FieldTooLarge { name: String, limit_bytes: u64 },
    #[error("the field {name:?} is not UTF-8 text")]
    FieldNotText { name: String },
    #[error("the descriptor part is not valid JSON: {0}")]
    InvalidDescriptor(String),
    #[error("the multipart body has no `code` part")]
    MissingCode,
    #[error("malformed upload: {0}")]
    Malformed(String),
    #[error("unsupported archive feature: {0}")]
    Unsupported(String),
    #[error("the archive unpacks to more than {limit_bytes} bytes")]
    TooLarge { limit_bytes: u64 },
    #[error("{path:?} unpacks to more than {limit_bytes} bytes")]
    FileTooLarge { path: String, limit_bytes: u64 },
    #[error("the archive unpacks to more than {ratio_max} times its size")]
    RatioTooHigh { ratio_max: u64 },
    #[error("more than {limit} entries in the archive")]
    TooManyEntries { limit: usize },
    #[error("{path:?} leaves the archive's root ('..')")]
    PathEscapes { path: String },
    #[error("{path:?} is an absolute path")]
    AbsolutePath { path: String },
    #[error("{path:?} is not a valid path: {reason}")]
    InvalidPath { path: String, reason: &'static str },
    #[error("{path:?} is longer than {limit_bytes} bytes")]
    PathTooLong { path: String, limit_bytes: usize },
    #[error("{path:?} is a symbolic or hard link; only files and directories are taken")]
    LinkNotAllowed { path: String },
    #[error("{path:?} is a device, FIFO or socket; only files and directories are taken")]
    SpecialFile { path: String },
    #[error("{path:?} appears more than once in the archive")]
    DuplicatePath { path: String },
    #[error("the zip's central directory names one path more than once")]
    DuplicateZipEntry,
    #[error("{path:?} is both a file and a directory")]
    PathConflict { path: String },
    #[error("the archive holds no files")]
    Empty,
    #[error("corefn.json is not valid: {0}")]
    InvalidManifest(String),
}

/// A parsed `multipart/form-data` deploy.
#[derive(Debug, Clone, PartialEq)]
pub struct MultipartUpload {
    /// The `code` part's bytes.
    pub code: Vec<u8>,
    /// Its file name, without any directory a client put in front.
    pub filename: Option<String>,
    /// The `descriptor` part, parsed (not yet checked as a descriptor).
    pub descriptor: Option<Value>,
    /// Every other field, as text.
    pub fields: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveKind {
    Zip,
    TarGz,
}

/// One regular file of an archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveFile {
    /// Relative, `/`-separated, without `.` or empty components, and with
    /// the single top-level directory stripped.
    pub path: String,
    pub bytes: Vec<u8>,
    /// Any execute bit set in the entry's Unix mode.
    pub executable: bool,
}

/// An unpacked archive: its files in archive order, and `corefn.json` at
/// the root parsed (it stays among the files too).
#[derive(Debug, Clone, PartialEq)]
pub struct Archive {
    pub files: Vec<ArchiveFile>,
    pub manifest: Option<Value>,
}

impl Archive {
    pub fn file(&self, path: &str) -> Option<&ArchiveFile> {
        self.files.iter().find(|f| f.path == path)
    }
}

fn quoted(text: &str) -> String {
    text.chars().take(QUOTED_CHARS_MAX).collect()
}

// ---------------------------------------------------------------------------
// multipart/form-data

/// Parses a whole `multipart/form-data` body (RFC 7578). `content_type` is
/// the request's header value, which carries the boundary.
pub fn parse_multipart(
    content_type: &str,
    body: &[u8],
    limits: &UploadLimits,
) -> Result<MultipartUpload, UploadError> {
    let boundary = multer::parse_boundary(content_type).map_err(|e| match e {
        multer::Error::NoBoundary => UploadError::NoBoundary,
        _ => UploadError::NotMultipart {
            content_type: quoted(content_type),
        },
    })?;
    if boundary.is_empty() || boundary.len() > BOUNDARY_BYTES_MAX {
        return Err(UploadError::InvalidBoundary);
    }
    // multer is async over a stream of chunks; the body is already in
    // memory, so it is one chunk and every future is ready at once:
    // `block_on` only polls, it never parks and needs no runtime.
    let chunk: Result<Vec<u8>, std::convert::Infallible> = Ok(body.to_vec());
    let mut multipart = multer::Multipart::new(futures_lite::stream::once(chunk), boundary);
    futures_lite::future::block_on(async {
        let mut upload = MultipartUpload {
            code: Vec::new(),
            filename: None,
            descriptor: None,
            fields: BTreeMap::new(),
        };
        let mut has_code = false;
        let mut parts = 0usize;
        while let Some(mut field) = multipart.next_field().await.map_err(multer_error)? {
            parts += 1;
            if parts > limits.parts_max {
                return Err(UploadError::TooManyParts {
                    limit: limits.parts_max,
                });
            }
            let header_bytes: usize = field
                .headers()
                .iter()
                .map(|(name, value)| name.as_str().len() + value.len() + 4)
                .sum();
            if header_bytes > limits.part_header_bytes_max {
                return Err(UploadError::PartHeadersTooLarge {
                    limit_bytes: limits.part_header_bytes_max,
                });
            }
            let is_form_data = field
                .headers()
                .get("content-disposition")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| {
                    v.trim_start()
                        .get(..9)
                        .is_some_and(|t| t.eq_ignore_ascii_case("form-data"))
                });
            let name = match field.name() {
                Some(name) if is_form_data && !name.is_empty() => name.to_string(),
                _ => return Err(UploadError::UnnamedPart),
            };
            let filename = field.file_name().and_then(base_name);
            let has_file = field.file_name().is_some();
            let limit = match name.as_str() {
                "code" => limits.code_bytes_max,
                "descriptor" => limits.descriptor_bytes_max,
                _ if has_file => {
                    return Err(UploadError::UnexpectedFile {
                        name: quoted(&name),
                    })
                }
                _ => limits.field_bytes_max,
            };
            let mut bytes = Vec::new();
            while let Some(chunk) = field.chunk().await.map_err(multer_error)? {
                if (bytes.len() + chunk.len()) as u64 > limit {
                    return Err(UploadError::FieldTooLarge {
                        name: quoted(&name),
                        limit_bytes: limit,
                    });
                }
                bytes.extend_from_slice(&chunk);
            }
            let duplicate = || UploadError::DuplicateField {
                name: quoted(&name),
            };
            match name.as_str() {
                "code" => {
                    if has_code {
                        return Err(duplicate());
                    }
                    has_code = true;
                    upload.code = bytes;
                    upload.filename = filename;
                }
                "descriptor" => {
                    if upload.descriptor.is_some() {
                        return Err(duplicate());
                    }
                    let value = serde_json::from_slice(&bytes)
                        .map_err(|e| UploadError::InvalidDescriptor(e.to_string()))?;
                    upload.descriptor = Some(value);
                }
                _ => {
                    if upload.fields.contains_key(&name) {
                        return Err(duplicate());
                    }
                    let text = String::from_utf8(bytes).map_err(|_| UploadError::FieldNotText {
                        name: quoted(&name),
                    })?;
                    upload.fields.insert(name, text);
                }
            }
        }
        if !has_code {
            return Err(UploadError::MissingCode);
        }
        Ok(upload)
    })
}

/// The last component of a client's file name (browsers and curl may send
/// a path; `C:\fakepath\x.zip` is still seen); `None` when nothing is left.
fn base_name(name: &str) -> Option<String> {
    let base = name.rsplit(['/', '\\']).next().unwrap_or(name);
    if base.is_empty() || base == "." || base == ".." {
        None
    } else {
        Some(base.to_string())
    }
}

fn multer_error(error: multer::Error) -> UploadError {
    match error {
        multer::Error::IncompleteFieldData { .. }
        | multer::Error::IncompleteHeaders
        | multer::Error::IncompleteStream => UploadError::Unterminated(error.to_string()),
        other => UploadError::Malformed(other.to_string()),
    }
}

// ---------------------------------------------------------------------------
// Archives

/// The archive kind of an upload, by its magic bytes: `PK\x03\x04` is a
/// zip, `\x1f\x8b` a gzip whose first block must be a tar header. A
/// content type never makes bytes an archive; it can only contradict
/// them (`application/zip` on a gzip), which gives `None`.
pub fn detect(content_type: Option<&str>, bytes: &[u8]) -> Option<ArchiveKind> {
    let kind = if bytes.starts_with(b"PK\x03\x04") {
        ArchiveKind::Zip
    } else if bytes.starts_with(b"\x1f\x8b") && gzip_holds_tar(bytes) {
        ArchiveKind::TarGz
    } else {
        return None;
    };
    let declared = content_type.and_then(|ct| {
        let essence = ct
            .split(';')
            .next()
            .unwrap_or(ct)
            .trim()
            .to_ascii_lowercase();
        match essence.as_str() {
            "application/zip" | "application/x-zip-compressed" | "application/x-zip" => {
                Some(ArchiveKind::Zip)
            }
            "application/gzip"
            | "application/x-gzip"
            | "application/x-tar+gzip"
            | "application/x-compressed-tar"
            | "application/x-gtar" => Some(ArchiveKind::TarGz),
            _ => None,
        }
    });
    match declared {
        Some(declared) if declared != kind => None,
        _ => Some(kind),
    }
}

/// Whether the first 512 decompressed bytes are a tar header: the ustar
/// magic, or (old v7 tar) a correct header checksum.
fn gzip_holds_tar(bytes: &[u8]) -> bool {
    let mut header = [0u8; 512];
    let mut decoder = flate2::read::GzDecoder::new(bytes);
    if decoder.read_exact(&mut header).is_err() {
        return false;
    }
    if &header[257..262] == b"ustar" {
        return true;
    }
    let stored = std::str::from_utf8(&header[148..156])
        .ok()
        .map(|t| t.trim_matches(|c: char| c == '\0' || c == ' '))
        .and_then(|t| u32::from_str_radix(t, 8).ok());
    let sum: u32 = header
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                32
            } else {
                u32::from(b)
            }
        })
        .sum();
    stored == Some(sum) && header[0] != 0
}

/// Unpacks an archive into memory, within `limits`.
pub fn unpack(
    bytes: &[u8],
    kind: ArchiveKind,
    limits: &UploadLimits,
) -> Result<Archive, UploadError> {
    let mut collector = Collector::new(bytes.len(), limits);
    match kind {
        ArchiveKind::Zip => unpack_zip(bytes, &mut collector)?,
        ArchiveKind::TarGz => unpack_tar_gz(bytes, &mut collector)?,
    }
    collector.finish()
}

fn unpack_zip(bytes: &[u8], collector: &mut Collector<'_>) -> Result<(), UploadError> {
    let mut zip = zip::ZipArchive::new(io::Cursor::new(bytes)).map_err(zip_error)?;
    if zip.has_duplicate_names() {
        return Err(UploadError::DuplicateZipEntry);
    }
    if zip.len() > collector.limits.entries_max {
        return Err(UploadError::TooManyEntries {
            limit: collector.limits.entries_max,
        });
    }
    for index in 0..zip.len() {
        collector.count_entry()?;
        let mut file = zip.by_index(index).map_err(zip_error)?;
        let raw_name = file.name().map_err(zip_error)?.into_owned();
        let mode = file.unix_mode();
        let file_type = mode.map(|m| m & S_IFMT).filter(|&t| t != 0);
        if file.is_symlink() || file_type == Some(S_IFLNK) {
            return Err(UploadError::LinkNotAllowed {
                path: quoted(&raw_name),
            });
        }
        let is_dir = file.is_dir() || file_type == Some(S_IFDIR);
        if let Some(t) = file_type {
            if t != S_IFREG && t != S_IFDIR {
                return Err(UploadError::SpecialFile {
                    path: quoted(&raw_name),
                });
            }
        }
        let Some(path) = normalise_path(&raw_name, collector.limits.path_bytes_max)? else {
            if is_dir {
                continue; // "./" and the like: the root itself
            }
            return Err(UploadError::InvalidPath {
                path: quoted(&raw_name),
                reason: "it names no file",
            });
        };
        if is_dir {
            collector.add_dir(path)?;
            continue;
        }
        if file.encrypted() {
            return Err(UploadError::Unsupported(format!(
                "{:?} is encrypted",
                quoted(&path)
            )));
        }
        let executable = mode.is_some_and(|m| m & 0o111 != 0);
        collector.add_file(path, &mut file, executable)?;
    }
    Ok(())
}

const S_IFMT: u32 = 0o170_000;
const S_IFREG: u32 = 0o100_000;
const S_IFDIR: u32 = 0o040_000;
const S_IFLNK: u32 = 0o120_000;

fn zip_error(error: zip::result::ZipError) -> UploadError {
    use zip::result::ZipError;
    match error {
        ZipError::UnsupportedArchive(what) => UploadError::Unsupported(what.to_string()),
        other => UploadError::Malformed(format!("zip: {other}")),
    }
}

/// Counts every decompressed byte of the tar stream and fails the read
/// once past `left`, so that nothing tar does on its own (it reads pax and
/// GNU long-name entries whole) can outgrow the limits.
struct BoundedReader<R> {
    inner: R,
    left: u64,
    tripped: Rc<Cell<bool>>,
}

impl<R: Read> Read for BoundedReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            // One byte more tells a stream that ends exactly at the bound
            // from one that goes on.
            let mut probe = [0u8; 1];
            return match self.inner.read(&mut probe)? {
                0 => Ok(0),
                _ => {
                    self.tripped.set(true);
                    Err(io::Error::other("decompressed stream over its limit"))
                }
            };
        }
        let want = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        self.left -= n as u64;
        Ok(n)
    }
}

fn unpack_tar_gz(bytes: &[u8], collector: &mut Collector<'_>) -> Result<(), UploadError> {
    let tripped = Rc::new(Cell::new(false));
    let stream_max = collector
        .total_max
        .saturating_add(TAR_OVERHEAD_FIXED)
        .saturating_add(TAR_OVERHEAD_PER_ENTRY.saturating_mul(collector.limits.entries_max as u64));
    let reader = BoundedReader {
        inner: flate2::bufread::GzDecoder::new(bytes),
        left: stream_max,
        tripped: Rc::clone(&tripped),
    };
    let over = collector.over_limit_error();
    let io_error = |what: &str, e: io::Error| {
        if tripped.get() {
            over.clone()
        } else {
            UploadError::Malformed(format!("tar.gz: {what}: {e}"))
        }
    };
    let mut archive = tar::Archive::new(reader);
    let entries = archive.entries().map_err(|e| io_error("entries", e))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| io_error("entry header", e))?;
        collector.count_entry()?;
        let raw_path = String::from_utf8(entry.path_bytes().into_owned()).map_err(|_| {
            UploadError::InvalidPath {
                path: quoted(&String::from_utf8_lossy(&entry.path_bytes())),
                reason: "it is not UTF-8",
            }
        })?;
        let kind = entry.header().entry_type();
        if kind.is_pax_global_extensions() {
            continue; // `git archive` writes one with the commit id
        }
        if kind.is_symlink() || kind.is_hard_link() {
            return Err(UploadError::LinkNotAllowed {
                path: quoted(&raw_path),
            });
        }
        if kind.is_character_special() || kind.is_block_special() || kind.is_fifo() {
            return Err(UploadError::SpecialFile {
                path: quoted(&raw_path),
            });
        }
        if kind.is_gnu_sparse() {
            return Err(UploadError::Unsupported(format!(
                "{:?} is a sparse file",
                quoted(&raw_path)
            )));
        }
        let is_dir = kind.is_dir();
        if !is_dir && !kind.is_file() && !kind.is_contiguous() {
            return Err(UploadError::Unsupported(format!(
                "{:?} has tar entry type {:?}",
                quoted(&raw_path),
                kind.as_byte() as char
            )));
        }
        let Some(path) = normalise_path(&raw_path, collector.limits.path_bytes_max)? else {
            if is_dir {
                continue;
            }
            return Err(UploadError::InvalidPath {
                path: quoted(&raw_path),
                reason: "it names no file",
            });
        };
        if is_dir {
            collector.add_dir(path)?;
            continue;
        }
        let mode = entry
            .header()
            .mode()
            .map_err(|e| io_error("entry mode", e))?;
        let result = collector.add_file(path, &mut entry, mode & 0o111 != 0);
        if tripped.get() {
            return Err(over.clone());
        }
        result?;
    }
    // The tar ends at its zero blocks, maybe before the gzip trailer: read
    // to the end of the gzip stream so that its checksum and length are
    // checked too, then refuse anything after it.
    let mut reader = archive.into_inner();
    io::copy(&mut reader, &mut io::sink()).map_err(|e| io_error("gzip stream", e))?;
    if !reader.inner.into_inner().is_empty() {
        return Err(UploadError::Malformed(
            "tar.gz: data after the end of the gzip stream".into(),
        ));
    }
    Ok(())
}

/// Normalises an entry's path: `\` and `/` separate, empty and `.`
/// components go, and what is left must be relative, inside the root and
/// printable. `None` for a path that names the root itself.
fn normalise_path(raw: &str, path_bytes_max: usize) -> Result<Option<String>, UploadError> {
    let invalid = |reason| UploadError::InvalidPath {
        path: quoted(raw),
        reason,
    };
    if raw.contains('\0') {
        return Err(invalid("it contains a NUL byte"));
    }
    if raw.chars().any(char::is_control) {
        return Err(invalid("it contains a control character"));
    }
    let unified = raw.replace('\\', "/");
    let first = unified.split('/').next().unwrap_or("");
    let is_drive = first.len() == 2
        && first.as_bytes()[1] == b':'
        && first.as_bytes()[0].is_ascii_alphabetic();
    if unified.starts_with('/') || is_drive {
        return Err(UploadError::AbsolutePath { path: quoted(raw) });
    }
    let mut parts = Vec::new();
    for component in unified.split('/') {
        match component {
            "" | "." => {}
            ".." => return Err(UploadError::PathEscapes { path: quoted(raw) }),
            other => parts.push(other),
        }
    }
    if parts.is_empty() {
        return Ok(None);
    }
    let path = parts.join("/");
    if path.len() > path_bytes_max {
        return Err(UploadError::PathTooLong {
            path: quoted(&path),
            limit_bytes: path_bytes_max,
        });
    }
    Ok(Some(path))
}

/// The running totals of one unpack.
struct Collector<'l> {
    limits: &'l UploadLimits,
    /// The lower of the size limit and the ratio bound.
    total_max: u64,
    /// Whether `total_max` is the ratio bound.
    ratio_bound: bool,
    total: u64,
    entries: usize,
    files: Vec<ArchiveFile>,
    dirs: Vec<String>,
    seen: HashSet<String>,
}

impl<'l> Collector<'l> {
    fn new(input_bytes: usize, limits: &'l UploadLimits) -> Self {
        let by_ratio = (input_bytes as u64)
            .saturating_mul(limits.compression_ratio_max)
            .max(RATIO_FREE_BYTES);
        Collector {
            limits,
            total_max: limits.unpacked_bytes_max.min(by_ratio),
            ratio_bound: by_ratio < limits.unpacked_bytes_max,
            total: 0,
            entries: 0,
            files: Vec::new(),
            dirs: Vec::new(),
            seen: HashSet::new(),
        }
    }

    fn over_limit_error(&self) -> UploadError {
        if self.ratio_bound {
            UploadError::RatioTooHigh {
                ratio_max: self.limits.compression_ratio_max,
            }
        } else {
            UploadError::TooLarge {
                limit_bytes: self.limits.unpacked_bytes_max,
            }
        }
    }

    fn count_entry(&mut self) -> Result<(), UploadError> {
        self.entries += 1;
        if self.entries > self.limits.entries_max {
            return Err(UploadError::TooManyEntries {
                limit: self.limits.entries_max,
            });
        }
        Ok(())
    }

    fn claim(&mut self, path: &str) -> Result<(), UploadError> {
        if !self.seen.insert(path.to_string()) {
            return Err(UploadError::DuplicatePath { path: quoted(path) });
        }
        Ok(())
    }

    fn add_dir(&mut self, path: String) -> Result<(), UploadError> {
        if is_macos_fork(&path) {
            return Ok(());
        }
        self.claim(&path)?;
        self.dirs.push(path);
        Ok(())
    }

    /// Reads one file's content, at most up to what the limits leave; the
    /// entry's declared size plays no part.
    fn add_file(
        &mut self,
        path: String,
        content: &mut dyn Read,
        executable: bool,
    ) -> Result<(), UploadError> {
        let left = self.total_max - self.total;
        let cap = self.limits.file_bytes_max.min(left);
        let mut bytes = Vec::new();
        content
            .take(cap.saturating_add(1))
            .read_to_end(&mut bytes)
            .map_err(|e| UploadError::Malformed(format!("{:?}: {e}", quoted(&path))))?;
        if bytes.len() as u64 > cap {
            return Err(if self.limits.file_bytes_max < left {
                UploadError::FileTooLarge {
                    path: quoted(&path),
                    limit_bytes: self.limits.file_bytes_max,
                }
            } else {
                self.over_limit_error()
            });
        }
        self.total += bytes.len() as u64;
        if is_macos_fork(&path) {
            return Ok(());
        }
        self.claim(&path)?;
        self.files.push(ArchiveFile {
            path,
            bytes,
            executable,
        });
        Ok(())
    }

    fn finish(self) -> Result<Archive, UploadError> {
        let Collector {
            mut files, dirs, ..
        } = self;
        if files.is_empty() {
            return Err(UploadError::Empty);
        }
        // A file may not also be a directory: `a` and `a/b`.
        let file_paths: HashSet<&str> = files.iter().map(|f| f.path.as_str()).collect();
        for path in files
            .iter()
            .map(|f| f.path.as_str())
            .chain(dirs.iter().map(String::as_str))
        {
            let mut end = path.len();
            while let Some(slash) = path[..end].rfind('/') {
                if file_paths.contains(&path[..slash]) {
                    return Err(UploadError::PathConflict {
                        path: quoted(&path[..slash]),
                    });
                }
                end = slash;
            }
        }
        if let Some(prefix) = single_top_directory(&files) {
            let cut = prefix.len() + 1;
            for file in &mut files {
                file.path.drain(..cut);
            }
        }
        let manifest = match files.iter().find(|f| f.path == MANIFEST_PATH) {
            None => None,
            Some(file) => {
                let value: Value = serde_json::from_slice(&file.bytes)
                    .map_err(|e| UploadError::InvalidManifest(e.to_string()))?;
                if !value.is_object() {
                    return Err(UploadError::InvalidManifest(
                        "it must be a JSON object".into(),
                    ));
                }
                Some(value)
            }
        };
        Ok(Archive { files, manifest })
    }
}

fn is_macos_fork(path: &str) -> bool {
    path == "__MACOSX" || path.starts_with("__MACOSX/")
}

/// The one directory every file is under, if there is one.
fn single_top_directory(files: &[ArchiveFile]) -> Option<String> {
    let mut top: Option<&str> = None;
    for file in files {
        let (first, _) = file.path.split_once('/')?;
        match top {
            None => top = Some(first),
            Some(t) if t == first => {}
            Some(_) => return None,
        }
    }
    top.map(str::to_string)
}

// ---------------------------------------------------------------------------
// Entry point and name

/// Conventional main files at the archive's root, in order of preference
/// within a runtime.
pub const CONVENTIONS: &[(&str, Runtime)] = &[
    ("main.py", Runtime::Python),
    ("handler.py", Runtime::Python),
    ("index.py", Runtime::Python),
    ("index.js", Runtime::Node),
    ("handler.js", Runtime::Node),
    ("main.js", Runtime::Node),
    ("index.php", Runtime::Php),
    ("main.wasm", Runtime::Wasm),
    ("index.wasm", Runtime::Wasm),
    ("main.wat", Runtime::Wasm),
    ("main.c", Runtime::Wasm),
    ("handler", Runtime::Exec),
];

/// The function's main file and runtime.
///
/// `corefn.json` decides when it names a `runtime` or an `entry`
/// (`{"runtime": "node", "entry": "src/app.js"}`; a `handler` key is for
/// the caller and plays no part here): the entry must be a file of the
/// archive, its runtime comes from the manifest or else from its
/// extension; a runtime without an entry takes that runtime's
/// conventional file. A manifest that names an unknown runtime or a
/// missing file gives `None`, not a guess.
///
/// Without a manifest, the root files are matched against
/// [`CONVENTIONS`] (`handler` only when executable). Matches for more
/// than one runtime (a `main.py` next to an `index.js`) are ambiguous:
/// `None`, and a manifest settles it.
pub fn entry_point(archive: &Archive) -> Option<(&str, Runtime)> {
    let conventional = |runtime: Option<Runtime>| {
        let mut found: Option<(&str, Runtime)> = None;
        for &(name, rt) in CONVENTIONS {
            let wanted = match runtime {
                Some(Runtime::Native) => name == "main.c",
                Some(r) => r == rt,
                None => true,
            };
            if !wanted {
                continue;
            }
            let Some(file) = archive.file(name) else {
                continue;
            };
            if rt == Runtime::Exec && !file.executable {
                continue;
            }
            let rt = runtime.unwrap_or(rt);
            match found {
                None => found = Some((file.path.as_str(), rt)),
                Some((_, first)) if first == rt => {}
                Some(_) => return None,
            }
        }
        found
    };
    if let Some(manifest) = &archive.manifest {
        let runtime = match manifest.get("runtime") {
            None => None,
            Some(value) => Some(serde_json::from_value::<Runtime>(value.clone()).ok()?),
        };
        let entry = match manifest.get("entry") {
            None => None,
            Some(value) => Some(value.as_str()?),
        };
        match (entry, runtime) {
            (Some(entry), runtime) => {
                let path = normalise_path(entry, usize::MAX).ok()??;
                let file = archive.file(&path)?;
                let runtime = runtime.or_else(|| runtime_by_extension(file))?;
                return Some((file.path.as_str(), runtime));
            }
            (None, Some(runtime)) => return conventional(Some(runtime)),
            (None, None) => {}
        }
    }
    conventional(None)
}

fn runtime_by_extension(file: &ArchiveFile) -> Option<Runtime> {
    let extension = file
        .path
        .rsplit('/')
        .next()
        .and_then(|name| name.rsplit_once('.'))
        .map(|(_, e)| e);
    match extension {
        Some("py") => Some(Runtime::Python),
        Some("js" | "cjs" | "mjs") => Some(Runtime::Node),
        Some("php") => Some(Runtime::Php),
        Some("wasm" | "wat" | "c") => Some(Runtime::Wasm),
        _ if file.executable => Some(Runtime::Exec),
        _ => None,
    }
}

/// Extensions taken off an upload's file name, longest first.
const NAME_EXTENSIONS: &[&str] = &[".tar.gz", ".tgz", ".zip"];

/// A function name from an upload's file name (`Greet.tar.gz` → `greet`):
/// the last path component, lowercased, without its extension, if that is
/// a valid function name.
pub fn default_name(filename: Option<&str>) -> Option<String> {
    let base = base_name(filename?)?.to_lowercase();
    let stem = NAME_EXTENSIONS
        .iter()
        .find_map(|e| base.strip_suffix(e))
        .or_else(|| base.rsplit_once('.').map(|(stem, _)| stem))
        .unwrap_or(&base);
    check_name(stem).ok()?;
    Some(stem.to_string())
}
