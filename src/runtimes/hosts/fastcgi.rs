// placeholder until the real client lands
#[derive(Debug)]
pub struct FastCgiOutput { pub stdout: Vec<u8>, pub stderr: Vec<u8>, pub app_status: u32 }
#[derive(Debug, thiserror::Error)]
pub enum FastCgiError {
    #[error("io {0}")] Io(std::io::Error),
    #[error("protocol {0}")] Protocol(String),
    #[error("too large {limit_bytes}")] StdoutTooLarge { limit_bytes: usize },
    #[error("closed")] ConnectionClosed,
    #[error("rejected {protocol_status}")] Rejected { protocol_status: u8 },
}
impl FastCgiError { pub fn is_timeout(&self) -> bool { false } }
pub fn request<S: std::io::Read + std::io::Write>(_stream: &mut S, _request_id: u16, _params: &[(String, String)], _stdin: &[u8], _stdout_bytes_max: usize, _keep_conn: bool) -> Result<FastCgiOutput, FastCgiError> { Err(FastCgiError::ConnectionClosed) }
