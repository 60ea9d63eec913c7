//! What an upload is and how it becomes an artifact: C and C++ compile to
//! `wasm32-wasi` with clang (or to a shared library with cc/c++ for the
//! `native` runtime), scripts get their interpreter's syntax check, and
//! everything else is taken as it is. A check or compile that fails is a
//! [`RegistryError::Compile`] carrying the tool's diagnostics; nothing is
//! stored then.
//!
//! Tools run as child processes in a scratch directory, each bounded by
//! the compile timeout (killed past it) and its output by
//! [`DIAGNOSTICS_BYTES_MAX`]. Control plane only: this blocks.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::RegistryError;
use crate::runtimes::descriptor::Runtime;

/// Diagnostics kept from a failed check or compile.
pub const DIAGNOSTICS_BYTES_MAX: usize = 64 * 1024;
/// Diagnostic lines returned to the client.
pub const DIAGNOSTIC_LINES_MAX: usize = 200;
/// Parses a Python file and prints a syntax error as `file:line:col: message`.
const PYTHON_SYNTAX_CHECK: &str = "import ast, sys\n\
try:\n    ast.parse(open(sys.argv[1], 'rb').read(), 'function.py')\n\
except SyntaxError as e:\n    print(f'{e.filename}:{e.lineno}:{e.offset}: {e.msg}')\n    sys.exit(1)\n";
/// The native ABI, next to an uploaded C file so that `#include "corefn.h"`
/// finds it.
const NATIVE_HEADER: &str = include_str!("../../runtimes/native/corefn.h");
/// How often a running tool is checked for its end.
const TOOL_POLL: Duration = Duration::from_millis(5);

/// The tools, from the serve flags.
#[derive(Debug, Clone)]
pub struct Toolchain {
    /// The corefn binary: `corefn check-wasm FILE` compiles and links a
    /// module as the workers would.
    pub wasm_checker: PathBuf,
    /// The workers' compiled-module cache, which the check fills.
    pub wasm_cache_dir: Option<PathBuf>,
    pub clang: PathBuf,
    pub cc: PathBuf,
    pub python: PathBuf,
    pub node: PathBuf,
    pub php: PathBuf,
    pub compile_timeout: Duration,
}

/// An upload: the runtime asked for, the file name if one came with it,
/// and the bytes.
pub struct Upload<'a> {
    pub runtime: Runtime,
    pub filename: Option<&'a str>,
    pub bytes: &'a [u8],
}

/// What to store: bytes and the extension the runtime reads them by.
#[derive(Debug)]
pub struct Built {
    pub bytes: Vec<u8>,
    pub extension: &'static str,
    /// The tool that built or checked it, for the deploy answer.
    pub built_with: Option<&'static str>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    C,
    Cpp,
    Wat,
    Wasm,
    Python,
    JavaScript,
    Php,
    SharedLibrary,
    Script,
}

fn extension_of(filename: Option<&str>) -> Option<&str> {
    let name = filename?;
    let (_, extension) = name.rsplit_once('.')?;
    Some(extension)
}

fn classify(upload: &Upload<'_>) -> Result<Source, RegistryError> {
    let by_name = match extension_of(upload.filename) {
        Some("c") => Some(Source::C),
        Some("cc" | "cpp" | "cxx") => Some(Source::Cpp),
        Some("wat") => Some(Source::Wat),
        Some("wasm") => Some(Source::Wasm),
        Some("py") => Some(Source::Python),
        Some("js" | "cjs") => Some(Source::JavaScript),
        Some("php") => Some(Source::Php),
        Some("so") => Some(Source::SharedLibrary),
        _ => None,
    };
    let bytes = upload.bytes;
    let source = match (upload.runtime, by_name) {
        (_, Some(source)) => source,
        (Runtime::Wasm, None) if bytes.starts_with(b"\0asm") => Source::Wasm,
        (Runtime::Wasm, None) if looks_like_wat(bytes) => Source::Wat,
        (Runtime::Wasm, None) => Source::C,
        (Runtime::Native, None) if bytes.starts_with(b"\x7fELF") => Source::SharedLibrary,
        (Runtime::Native, None) => Source::C,
        (Runtime::Python, None) => Source::Python,
        (Runtime::Node, None) => Source::JavaScript,
        (Runtime::Php, None) => Source::Php,
        (Runtime::Exec, None) => Source::Script,
        (Runtime::Static, None) => {
            return Err(RegistryError::Invalid("static routes take no code".into()))
        }
    };
    let fits = match source {
        Source::C | Source::Cpp => matches!(upload.runtime, Runtime::Wasm | Runtime::Native),
        Source::Wat | Source::Wasm => upload.runtime == Runtime::Wasm,
        Source::Python => upload.runtime == Runtime::Python,
        Source::JavaScript => upload.runtime == Runtime::Node,
        Source::Php => upload.runtime == Runtime::Php,
        Source::SharedLibrary => upload.runtime == Runtime::Native,
        Source::Script => upload.runtime == Runtime::Exec,
    };
    if !fits && upload.runtime != Runtime::Exec {
        return Err(RegistryError::Invalid(format!(
            "a {} file cannot run on the {} runtime",
            upload.filename.unwrap_or("code"),
            upload.runtime.name()
        )));
    }
    Ok(if upload.runtime == Runtime::Exec {
        Source::Script
    } else {
        source
    })
}

fn looks_like_wat(bytes: &[u8]) -> bool {
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(4096)]);
    text.lines()
        .map(str::trim)
        .find(|line| !line.is_empty() && !line.starts_with(";;"))
        .is_some_and(|line| line.starts_with("(module"))
}

/// Checks or compiles the upload in `scratch` (an empty directory the
/// caller owns and removes).
pub fn build(
    upload: &Upload<'_>,
    tools: &Toolchain,
    scratch: &Path,
) -> Result<Built, RegistryError> {
    let source = classify(upload)?;
    let taken = |extension| {
        Ok(Built {
            bytes: upload.bytes.to_vec(),
            extension,
            built_with: None,
        })
    };
    match source {
        Source::Wasm | Source::Wat => {
            let extension = if source == Source::Wasm {
                "wasm"
            } else {
                "wat"
            };
            let file = format!("module.{extension}");
            fs::write(scratch.join(&file), upload.bytes)?;
            // In a process of its own: wasmtime stays out of the gateway,
            // and a compile past the timeout can be killed.
            let mut command = Command::new(&tools.wasm_checker);
            command.arg("check-wasm").arg(&file);
            if let Some(cache_dir) = &tools.wasm_cache_dir {
                command
                    .arg("--cache-dir")
                    .arg(std::path::absolute(cache_dir)?);
            }
            run_tool(
                &mut command,
                &tools.wasm_checker,
                tools.compile_timeout,
                scratch,
            )?;
            Ok(Built {
                bytes: upload.bytes.to_vec(),
                extension,
                built_with: Some("wasmtime"),
            })
        }
        Source::SharedLibrary => taken("so"),
        Source::Script => taken(if upload.bytes.starts_with(b"\x7fELF") {
            "bin"
        } else {
            "sh"
        }),
        Source::C | Source::Cpp => {
            let (file, compiler) = if source == Source::C {
                ("function.c", tools.clang.clone())
            } else {
                ("function.cpp", tools.clang.clone())
            };
            let input = scratch.join(file);
            fs::write(&input, upload.bytes)?;
            fs::write(scratch.join("corefn.h"), NATIVE_HEADER)?;
            let (output, extension, args): (PathBuf, &'static str, Vec<String>) =
                if upload.runtime == Runtime::Native {
                    let out = scratch.join("function.so");
                    (
                        out.clone(),
                        "so",
                        vec!["-shared".into(), "-fPIC".into(), "-O2".into()],
                    )
                } else {
                    let out = scratch.join("function.wasm");
                    (
                        out.clone(),
                        "wasm",
                        vec!["--target=wasm32-wasi".into(), "-O2".into()],
                    )
                };
            let program = if upload.runtime == Runtime::Native {
                tools.cc.clone()
            } else {
                compiler
            };
            let mut command = Command::new(&program);
            command
                .args(&args)
                .arg("-o")
                .arg(&output)
                .arg(&input)
                .current_dir(scratch);
            run_tool(&mut command, &program, tools.compile_timeout, scratch)?;
            let bytes = fs::read(&output)?;
            Ok(Built {
                bytes,
                extension,
                built_with: Some(if upload.runtime == Runtime::Native {
                    "cc"
                } else {
                    "clang"
                }),
            })
        }
        Source::Python => {
            let input = scratch.join("function.py");
            fs::write(&input, upload.bytes)?;
            let mut command = Command::new(&tools.python);
            command.arg("-c").arg(PYTHON_SYNTAX_CHECK).arg(&input);
            run_tool(&mut command, &tools.python, tools.compile_timeout, scratch)?;
            Ok(Built {
                bytes: upload.bytes.to_vec(),
                extension: "py",
                built_with: Some("python"),
            })
        }
        Source::JavaScript => {
            let input = scratch.join("function.js");
            fs::write(&input, upload.bytes)?;
            let mut command = Command::new(&tools.node);
            command.arg("--check").arg("function.js");
            run_tool(&mut command, &tools.node, tools.compile_timeout, scratch)?;
            Ok(Built {
                bytes: upload.bytes.to_vec(),
                extension: "js",
                built_with: Some("node"),
            })
        }
        Source::Php => {
            let input = scratch.join("function.php");
            fs::write(&input, upload.bytes)?;
            let mut command = Command::new(&tools.php);
            command.arg("-l").arg("function.php");
            run_tool(&mut command, &tools.php, tools.compile_timeout, scratch)?;
            Ok(Built {
                bytes: upload.bytes.to_vec(),
                extension: "php",
                built_with: Some("php"),
            })
        }
    }
}

/// Runs a tool to its end within `timeout`; its output is the diagnostics
/// of a failure.
fn run_tool(
    command: &mut Command,
    program: &Path,
    timeout: Duration,
    scratch: &Path,
) -> Result<(), RegistryError> {
    let log_path = scratch.join("diagnostics.txt");
    let log = fs::File::create(&log_path)?;
    let log_err = log.try_clone()?;
    command
        .current_dir(scratch)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err);
    let mut child = command.spawn().map_err(|e| RegistryError::Compile {
        diagnostics: vec![format!("cannot start {}: {e}", program.display())],
    })?;
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(TOOL_POLL);
    };
    let mut text = String::new();
    fs::File::open(&log_path)?
        .take(DIAGNOSTICS_BYTES_MAX as u64)
        .read_to_string(&mut text)
        .ok();
    match status {
        Some(status) if status.success() => Ok(()),
        Some(status) => {
            let mut diagnostics: Vec<String> = text
                .lines()
                .filter(|line| !line.trim().is_empty())
                .take(DIAGNOSTIC_LINES_MAX)
                .map(|line| line.replace(&scratch.display().to_string(), "."))
                .collect();
            if diagnostics.is_empty() {
                diagnostics.push(format!("{} failed ({status})", program.display()));
            }
            Err(RegistryError::Compile { diagnostics })
        }
        None => Err(RegistryError::Compile {
            diagnostics: vec![format!(
                "{} did not finish within {} ms and was stopped",
                program.display(),
                timeout.as_millis()
            )],
        }),
    }
}
