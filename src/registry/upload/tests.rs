use std::io::{Cursor, Write};

use flate2::write::GzEncoder;
use flate2::Compression;
use zip::write::SimpleFileOptions;
use zip::CompressionMethod;

use super::*;

// ---------------------------------------------------------------------------
// Builders: real archives and bodies, made with the same crates.

enum ZipEntry<'a> {
    File(&'a str, &'a [u8], u32),
    Dir(&'a str),
    Symlink(&'a str, &'a str),
}

fn zip_of(entries: &[ZipEntry<'_>]) -> Vec<u8> {
    let mut writer = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let options = SimpleFileOptions::default().compression_method(CompressionMethod::Deflated);
    for entry in entries {
        match *entry {
            ZipEntry::File(name, bytes, mode) => {
                writer
                    .start_file(name, options.unix_permissions(mode))
                    .expect("start_file");
                writer.write_all(bytes).expect("write");
            }
            ZipEntry::Dir(name) => writer.add_directory(name, options).expect("dir"),
            ZipEntry::Symlink(name, target) => {
                writer.add_symlink(name, target, options).expect("symlink")
            }
        }
    }
    writer.finish().expect("finish").into_inner()
}

fn zip_files(files: &[(&str, &[u8])]) -> Vec<u8> {
    let entries: Vec<ZipEntry<'_>> = files
        .iter()
        .map(|&(name, bytes)| ZipEntry::File(name, bytes, 0o644))
        .collect();
    zip_of(&entries)
}

/// A tar entry with its path written into the header as given (the
/// builder's own path setters refuse `..` and absolute paths).
struct TarEntry<'a> {
    path: &'a str,
    kind: tar::EntryType,
    mode: u32,
    data: &'a [u8],
    link: Option<&'a str>,
}

fn file<'a>(path: &'a str, data: &'a [u8]) -> TarEntry<'a> {
    TarEntry {
        path,
        kind: tar::EntryType::Regular,
        mode: 0o644,
        data,
        link: None,
    }
}

fn tar_gz_of(entries: &[TarEntry<'_>]) -> Vec<u8> {
    let mut builder = tar::Builder::new(GzEncoder::new(Vec::new(), Compression::default()));
    for entry in entries {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(entry.kind);
        header.set_mode(entry.mode);
        header.set_size(entry.data.len() as u64);
        if let Some(link) = entry.link {
            header.set_link_name(link).expect("link name");
        }
        let name = &mut header.as_old_mut().name;
        if entry.path.len() < name.len() {
            name[..entry.path.len()].copy_from_slice(entry.path.as_bytes());
            header.set_cksum();
            builder.append(&header, entry.data).expect("append");
        } else {
            // A GNU long-name entry first (this setter checks the path).
            builder
                .append_data(&mut header, entry.path, entry.data)
                .expect("append long");
        }
    }
    builder.into_inner().expect("tar").finish().expect("gzip")
}

fn tar_gz_files(files: &[(&str, &[u8])]) -> Vec<u8> {
    let entries: Vec<TarEntry<'_>> = files.iter().map(|&(p, d)| file(p, d)).collect();
    tar_gz_of(&entries)
}

fn unpack_zip(bytes: &[u8]) -> Result<Archive, UploadError> {
    unpack(bytes, ArchiveKind::Zip, &UploadLimits::default())
}

fn unpack_tgz(bytes: &[u8]) -> Result<Archive, UploadError> {
    unpack(bytes, ArchiveKind::TarGz, &UploadLimits::default())
}

fn paths(archive: &Archive) -> Vec<&str> {
    archive.files.iter().map(|f| f.path.as_str()).collect()
}

fn small_limits() -> UploadLimits {
    UploadLimits {
        unpacked_bytes_max: 1024 * 1024,
        compression_ratio_max: u64::MAX,
        entries_max: 10,
        ..UploadLimits::default()
    }
}

// ---------------------------------------------------------------------------
// Archives: happy paths

#[test]
fn zip_unpacks_files_dirs_and_modes() {
    let bytes = zip_of(&[
        ZipEntry::Dir("lib/"),
        ZipEntry::File("index.js", b"exports.handler = 1;\n", 0o644),
        ZipEntry::File("lib/util.js", b"module.exports = {};\n", 0o644),
        ZipEntry::File("bin/run", b"#!/bin/sh\necho hi\n", 0o755),
    ]);
    assert_eq!(detect(None, &bytes), Some(ArchiveKind::Zip));
    let archive = unpack_zip(&bytes).expect("unpack");
    assert_eq!(paths(&archive), ["index.js", "lib/util.js", "bin/run"]);
    assert_eq!(archive.files[0].bytes, b"exports.handler = 1;\n");
    assert!(!archive.files[0].executable);
    assert!(archive.files[2].executable);
    assert_eq!(archive.manifest, None);
    assert_eq!(entry_point(&archive), Some(("index.js", Runtime::Node)));
}

#[test]
fn tar_gz_unpacks_and_strips_the_top_directory() {
    let bytes = tar_gz_of(&[
        TarEntry {
            path: "pax_global_header",
            kind: tar::EntryType::XGlobalHeader,
            mode: 0o644,
            data: b"52 comment=0123456789abcdef0123456789abcdef01234567\n",
            link: None,
        },
        TarEntry {
            path: "greet/",
            kind: tar::EntryType::Directory,
            mode: 0o755,
            data: b"",
            link: None,
        },
        file("greet/main.py", b"def handler(req):\n    return 'hi'\n"),
        file("./greet/lib/util.py", b"X = 1\n"),
        TarEntry {
            path: "greet/handler",
            kind: tar::EntryType::Regular,
            mode: 0o755,
            data: b"#!/bin/sh\n",
            link: None,
        },
    ]);
    assert_eq!(
        detect(Some("application/gzip"), &bytes),
        Some(ArchiveKind::TarGz)
    );
    let archive = unpack_tgz(&bytes).expect("unpack");
    assert_eq!(paths(&archive), ["main.py", "lib/util.py", "handler"]);
    assert!(archive.files[2].executable);
    assert!(!archive.files[0].executable);
    assert_eq!(entry_point(&archive), None, "python and exec: ambiguous");
}

#[test]
fn zip_strips_one_top_directory_only_when_everything_is_under_it() {
    let archive = unpack_zip(&zip_files(&[
        ("greet/index.js", b"1"),
        ("greet/lib/a.js", b"2"),
    ]))
    .expect("unpack");
    assert_eq!(paths(&archive), ["index.js", "lib/a.js"]);
    let archive = unpack_zip(&zip_files(&[
        ("greet/index.js", b"1"),
        ("other/a.js", b"2"),
    ]))
    .expect("unpack");
    assert_eq!(paths(&archive), ["greet/index.js", "other/a.js"]);
    let archive =
        unpack_zip(&zip_files(&[("greet/index.js", b"1"), ("README", b"2")])).expect("unpack");
    assert_eq!(paths(&archive), ["greet/index.js", "README"]);
    let archive = unpack_zip(&zip_files(&[("a/b/index.js", b"1")])).expect("unpack");
    assert_eq!(paths(&archive), ["b/index.js"], "one level only");
}

#[test]
fn macos_resource_forks_are_dropped_before_stripping() {
    let archive = unpack_zip(&zip_of(&[
        ZipEntry::File("greet/index.js", b"1", 0o644),
        ZipEntry::Dir("__MACOSX/"),
        ZipEntry::File("__MACOSX/greet/._index.js", b"junk", 0o644),
    ]))
    .expect("unpack");
    assert_eq!(paths(&archive), ["index.js"]);
}

#[test]
fn manifest_is_parsed_after_stripping() {
    let archive = unpack_tgz(&tar_gz_files(&[
        (
            "app/corefn.json",
            br#"{"runtime": "node", "entry": "src/app.js"}"#,
        ),
        ("app/src/app.js", b"1"),
    ]))
    .expect("unpack");
    assert_eq!(
        archive.manifest,
        Some(serde_json::json!({"runtime": "node", "entry": "src/app.js"}))
    );
    assert_eq!(entry_point(&archive), Some(("src/app.js", Runtime::Node)));
}

#[test]
fn invalid_manifest_is_refused() {
    let bad = unpack_zip(&zip_files(&[("corefn.json", b"{nope"), ("index.js", b"1")]));
    assert!(
        matches!(bad, Err(UploadError::InvalidManifest(_))),
        "{bad:?}"
    );
    let not_object = unpack_zip(&zip_files(&[("corefn.json", b"[1]"), ("index.js", b"1")]));
    assert!(
        matches!(not_object, Err(UploadError::InvalidManifest(_))),
        "{not_object:?}"
    );
}

#[test]
fn empty_archives_are_refused() {
    assert_eq!(
        unpack_zip(&zip_of(&[ZipEntry::Dir("greet/")])),
        Err(UploadError::Empty)
    );
    assert_eq!(unpack_tgz(&tar_gz_of(&[])), Err(UploadError::Empty));
}

// ---------------------------------------------------------------------------
// Archives: hostile paths and entry types

#[test]
fn zip_slip_is_refused() {
    for name in [
        "../evil",
        "a/../../evil",
        "a/../b",
        "..\\evil",
        "ok/..\\..\\evil",
    ] {
        let result = unpack_zip(&zip_files(&[("index.js", b"1"), (name, b"x")]));
        assert!(
            matches!(result, Err(UploadError::PathEscapes { .. })),
            "{name}: {result:?}"
        );
        let result = unpack_tgz(&tar_gz_files(&[("index.js", b"1"), (name, b"x")]));
        assert!(
            matches!(result, Err(UploadError::PathEscapes { .. })),
            "{name}: {result:?}"
        );
    }
}

#[test]
fn absolute_paths_are_refused() {
    for name in ["/etc/passwd", "\\windows\\x", "C:/x", "c:\\x"] {
        let result = unpack_zip(&zip_files(&[(name, b"x")]));
        assert!(
            matches!(result, Err(UploadError::AbsolutePath { .. })),
            "{name}: {result:?}"
        );
        let result = unpack_tgz(&tar_gz_files(&[(name, b"x")]));
        assert!(
            matches!(result, Err(UploadError::AbsolutePath { .. })),
            "{name}: {result:?}"
        );
    }
}

#[test]
fn odd_paths_are_refused() {
    let result = unpack_tgz(&tar_gz_files(&[("a\x01b", b"x")]));
    assert!(
        matches!(result, Err(UploadError::InvalidPath { .. })),
        "{result:?}"
    );
    let long = "a/".repeat(60) + "x";
    let limits = UploadLimits {
        path_bytes_max: 100,
        ..UploadLimits::default()
    };
    let result = unpack(&tar_gz_files(&[(&long, b"x")]), ArchiveKind::TarGz, &limits);
    assert_eq!(
        result,
        Err(UploadError::PathTooLong {
            path: long,
            limit_bytes: 100
        })
    );
}

#[test]
fn links_and_devices_are_refused() {
    let result = unpack_zip(&zip_of(&[
        ZipEntry::File("index.js", b"1", 0o644),
        ZipEntry::Symlink("passwd", "/etc/passwd"),
    ]));
    assert_eq!(
        result,
        Err(UploadError::LinkNotAllowed {
            path: "passwd".into()
        })
    );
    for kind in [tar::EntryType::Symlink, tar::EntryType::Link] {
        let result = unpack_tgz(&tar_gz_of(&[TarEntry {
            path: "passwd",
            kind,
            mode: 0o777,
            data: b"",
            link: Some("/etc/passwd"),
        }]));
        assert_eq!(
            result,
            Err(UploadError::LinkNotAllowed {
                path: "passwd".into()
            }),
            "{kind:?}"
        );
    }
    for kind in [
        tar::EntryType::Char,
        tar::EntryType::Block,
        tar::EntryType::Fifo,
    ] {
        let result = unpack_tgz(&tar_gz_of(&[TarEntry {
            path: "dev",
            kind,
            mode: 0o644,
            data: b"",
            link: None,
        }]));
        assert_eq!(
            result,
            Err(UploadError::SpecialFile { path: "dev".into() }),
            "{kind:?}"
        );
    }
}

#[test]
fn duplicate_paths_are_refused() {
    let result = unpack_tgz(&tar_gz_files(&[("a.txt", b"1"), ("a.txt", b"2")]));
    assert_eq!(
        result,
        Err(UploadError::DuplicatePath {
            path: "a.txt".into()
        })
    );
    // Equal once normalised.
    let result = unpack_zip(&zip_files(&[("a/b.txt", b"1"), ("./a//b.txt", b"2")]));
    assert_eq!(
        result,
        Err(UploadError::DuplicatePath {
            path: "a/b.txt".into()
        })
    );
    // The same raw name twice in the central directory (the writer refuses
    // that, so rename the second entry in place: same length, same CRC).
    let mut bytes = zip_files(&[("a.txt", b"1"), ("b.txt", b"2")]);
    let mut renamed = 0;
    for i in 0..bytes.len() - 5 {
        if &bytes[i..i + 5] == b"b.txt" {
            bytes[i] = b'a';
            renamed += 1;
        }
    }
    assert_eq!(renamed, 2, "local and central header");
    assert_eq!(unpack_zip(&bytes), Err(UploadError::DuplicateZipEntry));
}

#[test]
fn a_file_cannot_also_be_a_directory() {
    let result = unpack_tgz(&tar_gz_files(&[("a", b"1"), ("a/b", b"2")]));
    assert_eq!(result, Err(UploadError::PathConflict { path: "a".into() }));
    let result = unpack_zip(&zip_of(&[
        ZipEntry::Dir("x/"),
        ZipEntry::File("x", b"1", 0o644),
    ]));
    assert_eq!(result, Err(UploadError::DuplicatePath { path: "x".into() }));
}

// ---------------------------------------------------------------------------
// Archives: limits

const BOMB_BYTES: usize = 32 * 1024 * 1024;

fn zeros_zip() -> Vec<u8> {
    let zeros = vec![0u8; BOMB_BYTES];
    let bytes = zip_files(&[("index.js", b"1"), ("zeros.bin", &zeros)]);
    assert!(
        bytes.len() < BOMB_BYTES / 500,
        "compresses well: {}",
        bytes.len()
    );
    bytes
}

#[test]
fn zip_bomb_stops_at_the_size_limit() {
    let bytes = zeros_zip();
    let limits = small_limits();
    assert_eq!(
        unpack(&bytes, ArchiveKind::Zip, &limits),
        Err(UploadError::TooLarge {
            limit_bytes: 1024 * 1024
        })
    );
    // With the default limits the same archive is over the ratio guard
    // (32 MiB from a few tens of KiB) long before 64 MiB.
    assert_eq!(
        unpack_zip(&bytes),
        Err(UploadError::RatioTooHigh {
            ratio_max: COMPRESSION_RATIO_MAX
        })
    );
}

#[test]
fn tar_gz_bomb_stops_at_the_size_limit() {
    let zeros = vec![0u8; BOMB_BYTES];
    let bytes = tar_gz_files(&[("zeros.bin", &zeros)]);
    assert!(bytes.len() < BOMB_BYTES / 500, "compresses well");
    assert_eq!(
        unpack(&bytes, ArchiveKind::TarGz, &small_limits()),
        Err(UploadError::TooLarge {
            limit_bytes: 1024 * 1024
        })
    );
}

#[test]
fn tar_long_name_bomb_is_bounded_too() {
    // tar reads a GNU long-name entry whole into memory by itself; the
    // bounded stream under it stops that.
    let zeros = vec![b'a'; BOMB_BYTES];
    let bytes = tar_gz_of(&[TarEntry {
        path: "././@LongLink",
        kind: tar::EntryType::GNULongName,
        mode: 0o644,
        data: &zeros,
        link: None,
    }]);
    assert_eq!(
        unpack(&bytes, ArchiveKind::TarGz, &small_limits()),
        Err(UploadError::TooLarge {
            limit_bytes: 1024 * 1024
        })
    );
}

#[test]
fn per_file_limit_names_the_file() {
    let limits = UploadLimits {
        file_bytes_max: 10,
        ..UploadLimits::default()
    };
    for (kind, bytes) in [
        (
            ArchiveKind::Zip,
            zip_files(&[("a", b"0123456789"), ("b", b"0123456789x")]),
        ),
        (
            ArchiveKind::TarGz,
            tar_gz_files(&[("a", b"0123456789"), ("b", b"0123456789x")]),
        ),
    ] {
        assert_eq!(
            unpack(&bytes, kind, &limits),
            Err(UploadError::FileTooLarge {
                path: "b".into(),
                limit_bytes: 10
            }),
            "{kind:?}"
        );
    }
}

#[test]
fn total_at_the_limit_is_taken() {
    let limits = UploadLimits {
        unpacked_bytes_max: 20,
        ..UploadLimits::default()
    };
    let bytes = zip_files(&[("a", b"0123456789"), ("b", b"0123456789")]);
    assert!(unpack(&bytes, ArchiveKind::Zip, &limits).is_ok());
    let bytes = zip_files(&[("a", b"0123456789"), ("b", b"0123456789x")]);
    assert_eq!(
        unpack(&bytes, ArchiveKind::Zip, &limits),
        Err(UploadError::TooLarge { limit_bytes: 20 })
    );
}

#[test]
fn too_many_entries_are_refused() {
    let names: Vec<String> = (0..11).map(|i| format!("f{i}")).collect();
    let files: Vec<(&str, &[u8])> = names.iter().map(|n| (n.as_str(), &b"x"[..])).collect();
    let limits = small_limits();
    assert_eq!(
        unpack(&zip_files(&files), ArchiveKind::Zip, &limits),
        Err(UploadError::TooManyEntries { limit: 10 })
    );
    assert_eq!(
        unpack(&tar_gz_files(&files), ArchiveKind::TarGz, &limits),
        Err(UploadError::TooManyEntries { limit: 10 })
    );
    assert!(unpack(&zip_files(&files[..10]), ArchiveKind::Zip, &limits).is_ok());
}

// ---------------------------------------------------------------------------
// Archives: broken bytes

#[test]
fn truncated_or_corrupt_zip_is_malformed() {
    let bytes = zip_files(&[("index.js", &[7u8; 4000][..]), ("b.js", b"2")]);
    for cut in [bytes.len() / 2, bytes.len() - 10, 30] {
        let result = unpack_zip(&bytes[..cut]);
        assert!(
            matches!(result, Err(UploadError::Malformed(_))),
            "cut at {cut}: {result:?}"
        );
    }
    // A flipped byte in the compressed data: the CRC or the inflater
    // catches it.
    let mut corrupt = zip_files(&[("index.js", &b"hello world ".repeat(100)[..])]);
    let data_start = 30 + "index.js".len();
    corrupt[data_start + 5] ^= 0xff;
    let result = unpack_zip(&corrupt);
    assert!(
        matches!(result, Err(UploadError::Malformed(_))),
        "{result:?}"
    );
    assert!(matches!(
        unpack_zip(b"PK\x03\x04 not really"),
        Err(UploadError::Malformed(_))
    ));
}

#[test]
fn truncated_gzip_is_malformed() {
    let bytes = tar_gz_files(&[("index.js", &b"console.log(1);\n".repeat(200)[..])]);
    assert!(unpack_tgz(&bytes).is_ok());
    // Short by its trailer only (tar itself has everything it needs), or
    // cut in the middle.
    for cut in [bytes.len() - 4, bytes.len() - 8, bytes.len() / 2, 10] {
        let result = unpack_tgz(&bytes[..cut]);
        assert!(
            matches!(result, Err(UploadError::Malformed(_))),
            "cut at {cut}: {result:?}"
        );
    }
    let mut trailing = bytes.clone();
    trailing.extend_from_slice(b"junk");
    assert!(matches!(
        unpack_tgz(&trailing),
        Err(UploadError::Malformed(_))
    ));
}

#[test]
fn detect_goes_by_magic_bytes() {
    let zip = zip_files(&[("a", b"1")]);
    let tgz = tar_gz_files(&[("a", b"1")]);
    let mut gzip_of_text = GzEncoder::new(Vec::new(), Compression::default());
    gzip_of_text.write_all(&[b'x'; 600]).expect("gzip");
    let gzip_of_text = gzip_of_text.finish().expect("gzip");
    assert_eq!(detect(None, &zip), Some(ArchiveKind::Zip));
    assert_eq!(
        detect(Some("application/octet-stream"), &zip),
        Some(ArchiveKind::Zip)
    );
    assert_eq!(
        detect(Some("application/zip"), &zip),
        Some(ArchiveKind::Zip)
    );
    assert_eq!(detect(None, &tgz), Some(ArchiveKind::TarGz));
    assert_eq!(detect(Some("application/zip"), &tgz), None, "contradiction");
    assert_eq!(
        detect(Some("application/gzip"), &zip),
        None,
        "contradiction"
    );
    assert_eq!(detect(None, &gzip_of_text), None, "gzip but not tar");
    assert_eq!(detect(Some("application/zip"), b"print(1)"), None);
    assert_eq!(detect(None, b""), None);
    assert_eq!(detect(None, b"\x1f\x8b"), None);
}

// ---------------------------------------------------------------------------
// Entry point and name

fn archive_of(files: &[(&str, bool)], manifest: Option<Value>) -> Archive {
    Archive {
        files: files
            .iter()
            .map(|&(path, executable)| ArchiveFile {
                path: path.into(),
                bytes: Vec::new(),
                executable,
            })
            .collect(),
        manifest,
    }
}

#[test]
fn entry_point_conventions() {
    let cases: &[(&str, bool, Runtime)] = &[
        ("main.py", false, Runtime::Python),
        ("handler.py", false, Runtime::Python),
        ("index.py", false, Runtime::Python),
        ("index.js", false, Runtime::Node),
        ("handler.js", false, Runtime::Node),
        ("main.js", false, Runtime::Node),
        ("index.php", false, Runtime::Php),
        ("main.wasm", false, Runtime::Wasm),
        ("index.wasm", false, Runtime::Wasm),
        ("main.wat", false, Runtime::Wasm),
        ("main.c", false, Runtime::Wasm),
        ("handler", true, Runtime::Exec),
    ];
    for &(path, executable, runtime) in cases {
        let archive = archive_of(&[("README.md", false), (path, executable)], None);
        assert_eq!(entry_point(&archive), Some((path, runtime)), "{path}");
    }
    // Preference within a runtime.
    let archive = archive_of(&[("index.py", false), ("main.py", false)], None);
    assert_eq!(entry_point(&archive), Some(("main.py", Runtime::Python)));
    let archive = archive_of(&[("main.c", false), ("main.wasm", false)], None);
    assert_eq!(entry_point(&archive), Some(("main.wasm", Runtime::Wasm)));
    // Only at the root, `handler` only when executable, nothing else.
    let archive = archive_of(&[("src/main.py", false), ("handler", false)], None);
    assert_eq!(entry_point(&archive), None);
    // Two runtimes: ambiguous.
    let archive = archive_of(&[("main.py", false), ("index.js", false)], None);
    assert_eq!(entry_point(&archive), None);
}

#[test]
fn manifest_overrides_the_conventions() {
    let files = [("main.py", false), ("index.js", false), ("bin/serve", true)];
    let with = |manifest| archive_of(&files, Some(manifest));
    assert_eq!(
        entry_point(&with(serde_json::json!({"runtime": "node"}))),
        Some(("index.js", Runtime::Node))
    );
    assert_eq!(
        entry_point(&with(serde_json::json!({"entry": "./main.py"}))),
        Some(("main.py", Runtime::Python))
    );
    assert_eq!(
        entry_point(&with(
            serde_json::json!({"runtime": "exec", "entry": "bin/serve", "handler": "x"})
        )),
        Some(("bin/serve", Runtime::Exec))
    );
    assert_eq!(
        entry_point(&with(serde_json::json!({"entry": "bin/serve"}))),
        Some(("bin/serve", Runtime::Exec)),
        "executable without a known extension"
    );
    // Named but wrong: no guess.
    assert_eq!(
        entry_point(&with(serde_json::json!({"entry": "missing.js"}))),
        None
    );
    assert_eq!(
        entry_point(&with(serde_json::json!({"runtime": "cobol"}))),
        None
    );
    assert_eq!(
        entry_point(&with(serde_json::json!({"runtime": "php"}))),
        None
    );
    assert_eq!(entry_point(&with(serde_json::json!({"entry": 7}))), None);
    // A manifest that says neither leaves the conventions (ambiguous here).
    assert_eq!(
        entry_point(&with(serde_json::json!({"handler": "main"}))),
        None
    );
    let native = archive_of(
        &[("main.c", false)],
        Some(serde_json::json!({"runtime": "native"})),
    );
    assert_eq!(entry_point(&native), Some(("main.c", Runtime::Native)));
}

#[test]
fn default_names() {
    assert_eq!(default_name(Some("Greet.zip")), Some("greet".into()));
    assert_eq!(
        default_name(Some("hello-world.tar.gz")),
        Some("hello-world".into())
    );
    assert_eq!(default_name(Some("dir/fn2.tgz")), Some("fn2".into()));
    assert_eq!(
        default_name(Some("C:\\fakepath\\App.zip")),
        Some("app".into())
    );
    assert_eq!(default_name(Some("main.py")), Some("main".into()));
    assert_eq!(default_name(Some("handler")), Some("handler".into()));
    assert_eq!(default_name(Some("my_fn.zip")), None);
    assert_eq!(default_name(Some("-x.zip")), None);
    assert_eq!(default_name(Some(".zip")), None);
    assert_eq!(default_name(Some(&format!("{}.zip", "a".repeat(64)))), None);
    assert_eq!(default_name(Some("")), None);
    assert_eq!(default_name(None), None);
}

// ---------------------------------------------------------------------------
// multipart/form-data

const CT: &str = "multipart/form-data; boundary=XyZ";

fn part(headers: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!("--XyZ\r\n{headers}\r\n\r\n").into_bytes();
    out.extend_from_slice(body);
    out.extend_from_slice(b"\r\n");
    out
}

fn body_of(parts: &[Vec<u8>]) -> Vec<u8> {
    let mut out = parts.concat();
    out.extend_from_slice(b"--XyZ--\r\n");
    out
}

fn code_part(body: &[u8]) -> Vec<u8> {
    part(
        "Content-Disposition: form-data; name=\"code\"; filename=\"src/greet.zip\"\r\n\
         Content-Type: application/zip",
        body,
    )
}

fn parse(body: &[u8]) -> Result<MultipartUpload, UploadError> {
    parse_multipart(CT, body, &UploadLimits::default())
}

#[test]
fn multipart_happy_path() {
    // Binary code with CRLFs and near-boundaries inside stays intact (the
    // boundary itself may not occur in a part: RFC 2046, 5.1.1).
    let code = b"PK\x03\x04\r\n--Xy\r\n-XyZ\r\n--XyY\x00\xff\r\n".to_vec();
    let body = body_of(&[
        code_part(&code),
        part(
            "Content-Disposition: form-data; name=\"descriptor\"",
            br#"{"runtime": "node", "timeout_ms": 500}"#,
        ),
        part("content-disposition: form-data; name=\"name\"", b"greet"),
        part("Content-Disposition: form-data; name=runtime", b"node"),
    ]);
    let mut with_preamble = b"ignored preamble\r\n".to_vec();
    with_preamble.extend_from_slice(&body);
    for body in [body, with_preamble] {
        let upload = parse(&body).expect("parse");
        assert_eq!(upload.code, code);
        assert_eq!(upload.filename.as_deref(), Some("greet.zip"));
        assert_eq!(
            upload.descriptor,
            Some(serde_json::json!({"runtime": "node", "timeout_ms": 500}))
        );
        assert_eq!(upload.fields.get("name").map(String::as_str), Some("greet"));
        assert_eq!(
            upload.fields.get("runtime").map(String::as_str),
            Some("node")
        );
        assert_eq!(upload.fields.len(), 2);
    }
    // A quoted boundary, a descriptor sent as a file, code without a name.
    let body = body_of(&[
        part("Content-Disposition: form-data; name=\"code\"", b"print(1)"),
        part(
            "Content-Disposition: form-data; name=\"descriptor\"; filename=\"corefn.json\"",
            b"{}",
        ),
    ]);
    let upload = parse_multipart(
        "Multipart/Form-Data; boundary=\"XyZ\"",
        &body,
        &UploadLimits::default(),
    )
    .expect("parse");
    assert_eq!(upload.code, b"print(1)");
    assert_eq!(upload.filename, None);
    assert_eq!(upload.descriptor, Some(serde_json::json!({})));
}

#[test]
fn multipart_content_type_must_carry_a_boundary() {
    let body = body_of(&[code_part(b"x")]);
    let limits = UploadLimits::default();
    assert_eq!(
        parse_multipart("multipart/form-data", &body, &limits),
        Err(UploadError::NoBoundary)
    );
    assert!(matches!(
        parse_multipart("application/json", &body, &limits),
        Err(UploadError::NotMultipart { .. })
    ));
    assert!(matches!(
        parse_multipart("multipart/mixed; boundary=XyZ", &body, &limits),
        Err(UploadError::NotMultipart { .. })
    ));
    assert!(matches!(
        parse_multipart("", &body, &limits),
        Err(UploadError::NotMultipart { .. })
    ));
    let long = format!("multipart/form-data; boundary={}", "b".repeat(71));
    assert_eq!(
        parse_multipart(&long, &body, &limits),
        Err(UploadError::InvalidBoundary)
    );
}

#[test]
fn multipart_unterminated_is_refused() {
    let full = body_of(&[code_part(b"some code here")]);
    // Inside the part's data, inside its headers, and with the part
    // complete but no closing boundary.
    let data_cut = full.len() - 20;
    let head_cut = 30;
    let no_close = code_part(b"some code here");
    for body in [&full[..data_cut], &full[..head_cut], &no_close[..]] {
        let result = parse(body);
        assert!(
            matches!(result, Err(UploadError::Unterminated(_))),
            "{:?}: {result:?}",
            String::from_utf8_lossy(body)
        );
    }
    // Not even a first boundary.
    let result = parse(b"just some bytes");
    assert!(
        matches!(
            result,
            Err(UploadError::Unterminated(_) | UploadError::Malformed(_))
        ),
        "{result:?}"
    );
}

#[test]
fn multipart_without_code_is_refused() {
    let body = body_of(&[part(
        "Content-Disposition: form-data; name=\"name\"",
        b"greet",
    )]);
    assert_eq!(parse(&body), Err(UploadError::MissingCode));
    assert_eq!(parse(b"--XyZ--\r\n"), Err(UploadError::MissingCode));
}

#[test]
fn multipart_field_rules() {
    let two_codes = body_of(&[code_part(b"1"), code_part(b"2")]);
    assert_eq!(
        parse(&two_codes),
        Err(UploadError::DuplicateField {
            name: "code".into()
        })
    );
    let name = |v: &[u8]| part("Content-Disposition: form-data; name=\"name\"", v);
    assert_eq!(
        parse(&body_of(&[code_part(b"1"), name(b"a"), name(b"b")])),
        Err(UploadError::DuplicateField {
            name: "name".into()
        })
    );
    assert_eq!(
        parse(&body_of(&[code_part(b"1"), name(b"\xff\xfe")])),
        Err(UploadError::FieldNotText {
            name: "name".into()
        })
    );
    assert_eq!(
        parse(&body_of(&[
            code_part(b"1"),
            part(
                "Content-Disposition: form-data; name=\"other\"; filename=\"x.bin\"",
                b"x"
            )
        ])),
        Err(UploadError::UnexpectedFile {
            name: "other".into()
        })
    );
    assert_eq!(
        parse(&body_of(&[
            code_part(b"1"),
            part("Content-Type: text/plain", b"x")
        ])),
        Err(UploadError::UnnamedPart)
    );
    assert_eq!(
        parse(&body_of(&[
            code_part(b"1"),
            part("Content-Disposition: attachment; name=\"name\"", b"x")
        ])),
        Err(UploadError::UnnamedPart)
    );
    let bad_descriptor = body_of(&[
        code_part(b"1"),
        part(
            "Content-Disposition: form-data; name=\"descriptor\"",
            b"{oops",
        ),
    ]);
    assert!(matches!(
        parse(&bad_descriptor),
        Err(UploadError::InvalidDescriptor(_))
    ));
}

#[test]
fn multipart_limits() {
    let limits = UploadLimits {
        parts_max: 3,
        code_bytes_max: 8,
        field_bytes_max: 4,
        part_header_bytes_max: 200,
        ..UploadLimits::default()
    };
    let field = |n: usize| {
        part(
            &format!("Content-Disposition: form-data; name=\"f{n}\""),
            b"v",
        )
    };
    let run = |parts: &[Vec<u8>]| parse_multipart(CT, &body_of(parts), &limits);
    assert!(run(&[code_part(b"12345678"), field(1), field(2)]).is_ok());
    assert_eq!(
        run(&[code_part(b"1"), field(1), field(2), field(3)]),
        Err(UploadError::TooManyParts { limit: 3 })
    );
    assert_eq!(
        run(&[code_part(b"123456789")]),
        Err(UploadError::FieldTooLarge {
            name: "code".into(),
            limit_bytes: 8
        })
    );
    assert_eq!(
        run(&[
            code_part(b"1"),
            part("Content-Disposition: form-data; name=\"name\"", b"12345")
        ]),
        Err(UploadError::FieldTooLarge {
            name: "name".into(),
            limit_bytes: 4
        })
    );
    let big_header = format!(
        "Content-Disposition: form-data; name=\"code\"\r\nX-Pad: {}",
        "p".repeat(300)
    );
    assert_eq!(
        run(&[part(&big_header, b"1")]),
        Err(UploadError::PartHeadersTooLarge { limit_bytes: 200 })
    );
}
