//! Per-function log files: what a function writes to stderr (and, for the
//! process runtimes, stdout outside the response) goes to
//! `<logs_dir>/<runtime>/<module>.log`, appended, one file per function
//! shared by every worker process. Tracebacks of failed handlers land here;
//! the client only gets a one-line reason.
//!
//! Files are opened with `O_APPEND`, so writes of several processes
//! interleave whole (each write lands at the end) without a lock.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::runtimes::descriptor::Runtime;

/// The longest file name a module turns into (file systems allow 255).
const LOG_NAME_BYTES_MAX: usize = 200;

#[derive(Debug, Clone)]
pub struct FunctionLogs {
    dir: Option<PathBuf>,
}

impl FunctionLogs {
    /// `None`: function output goes to the worker's stderr instead.
    pub fn new(dir: Option<PathBuf>) -> FunctionLogs {
        FunctionLogs { dir }
    }

    /// Where the log of `module` (as the descriptor names it) is kept.
    pub fn path(&self, runtime: Runtime, module: &str) -> Option<PathBuf> {
        let dir = self.dir.as_ref()?;
        Some(dir.join(runtime.name()).join(log_file_name(module)))
    }

    /// The log file opened for appending (directories created), or the
    /// worker's stderr when there is no log directory or it cannot be
    /// opened (said once per call on stderr).
    pub fn open(&self, runtime: Runtime, module: &str) -> io::Result<File> {
        match self.path(runtime, module) {
            Some(path) => open_append(&path),
            None => stderr_file(),
        }
    }

    /// Appends captured output (a wasm call's stderr, say) to the log.
    pub fn append(&self, runtime: Runtime, module: &str, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        let written = self
            .open(runtime, module)
            .and_then(|mut file| file.write_all(bytes));
        if let Err(error) = written {
            eprintln!(
                "corefn: cannot write the log of {} function {module:?}: {error}",
                runtime.name()
            );
        }
    }
}

/// Opens for appending; the directories are made only when missing (an
/// exec function opens its log on every request).
fn open_append(path: &Path) -> io::Result<File> {
    let open = || OpenOptions::new().create(true).append(true).open(path);
    match open() {
        Err(error) if error.kind() == io::ErrorKind::NotFound => {
            if let Some(parent) = path.parent() {
                fs::create_dir_all(parent)?;
            }
            open()
        }
        result => result,
    }
}

/// A new descriptor for this process's stderr, usable as a child's output.
fn stderr_file() -> io::Result<File> {
    let stderr = io::stderr();
    let fd = std::os::fd::AsFd::as_fd(&stderr).try_clone_to_owned()?;
    Ok(File::from(fd))
}

/// `api/hello.py` → `api_hello.py.log`: one flat name per module, nothing
/// that could leave the directory.
fn log_file_name(module: &str) -> String {
    let mut name: String = module
        .trim_start_matches(['/', '.'])
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if name.is_empty() {
        name.push('_');
    }
    let mut cut = name.len().min(LOG_NAME_BYTES_MAX);
    while !name.is_char_boundary(cut) {
        cut -= 1;
    }
    name.truncate(cut);
    name.push_str(".log");
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_names_become_flat_file_names() {
        assert_eq!(log_file_name("hello.py"), "hello.py.log");
        assert_eq!(
            log_file_name("../examples/python/boom.py"),
            "examples_python_boom.py.log"
        );
        assert_eq!(log_file_name("/abs/x y.js"), "abs_x_y.js.log");
        assert_eq!(log_file_name(".."), "_.log");
    }

    #[test]
    fn appended_output_lands_in_the_functions_log() {
        let dir = tempfile::tempdir().expect("tempdir");
        let logs = FunctionLogs::new(Some(dir.path().to_path_buf()));
        logs.append(Runtime::Python, "boom.py", b"Traceback\n");
        logs.append(Runtime::Python, "boom.py", b"again\n");
        let path = logs.path(Runtime::Python, "boom.py").expect("has a dir");
        assert_eq!(fs::read_to_string(path).expect("log"), "Traceback\nagain\n");
    }
}
