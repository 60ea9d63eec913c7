//! Chunked transfer coding (RFC 9112 §7.1), decoded incrementally: the
//! gateway reads request bodies with it, the control plane's loopback
//! client reads responses with it. Pure code over byte buffers.

use super::error::HttpError;

/// Longest chunk-size line (size + extensions) accepted.
const CHUNK_SIZE_LINE_BYTES_MAX: usize = 1024;

/// Incremental decoder of a chunked body (RFC 9112 §7.1). Trailer fields
/// are read and dropped.
#[derive(Debug, Default)]
pub struct ChunkedDecoder {
    state: ChunkState,
    body_bytes: usize,
    trailer_bytes: usize,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    #[default]
    Size,
    Data {
        remaining_bytes: usize,
    },
    DataEnd,
    Trailer,
    Done,
}

impl ChunkedDecoder {
    pub fn is_done(&self) -> bool {
        self.state == ChunkState::Done
    }

    /// Decodes from `input`, appending body bytes to `body`; returns how many
    /// input bytes were consumed. Stops at the end of the body or when the
    /// input runs out.
    pub fn decode(
        &mut self,
        input: &[u8],
        body: &mut Vec<u8>,
        body_bytes_max: usize,
        trailer_bytes_max: usize,
    ) -> Result<usize, HttpError> {
        let mut at = 0;
        loop {
            let rest = &input[at..];
            match self.state {
                ChunkState::Done => return Ok(at),
                ChunkState::Size => match httparse::parse_chunk_size(rest) {
                    Ok(httparse::Status::Complete((used, size))) => {
                        // httparse lets a bare LF (or CR) through inside
                        // an extension; a proxy that splits lines on LF
                        // would read another body: a smuggling vector.
                        if !is_crlf_line(&rest[..used]) {
                            return Err(HttpError::BadRequest(
                                "bare CR or LF in a chunk size line",
                            ));
                        }
                        at += used;
                        let size = usize::try_from(size).unwrap_or(usize::MAX);
                        if size > body_bytes_max - self.body_bytes {
                            return Err(HttpError::BodyTooLarge {
                                limit_bytes: body_bytes_max,
                            });
                        }
                        self.state = if size == 0 {
                            ChunkState::Trailer
                        } else {
                            ChunkState::Data {
                                remaining_bytes: size,
                            }
                        };
                    }
                    Ok(httparse::Status::Partial) => {
                        if rest.len() > CHUNK_SIZE_LINE_BYTES_MAX {
                            return Err(HttpError::BadRequest("chunk size line too long"));
                        }
                        return Ok(at);
                    }
                    Err(_) => return Err(HttpError::BadRequest("invalid chunk size")),
                },
                ChunkState::Data { remaining_bytes } => {
                    if rest.is_empty() {
                        return Ok(at);
                    }
                    let take = remaining_bytes.min(rest.len());
                    body.extend_from_slice(&rest[..take]);
                    self.body_bytes += take;
                    at += take;
                    self.state = if take == remaining_bytes {
                        ChunkState::DataEnd
                    } else {
                        ChunkState::Data {
                            remaining_bytes: remaining_bytes - take,
                        }
                    };
                }
                ChunkState::DataEnd => {
                    if rest.len() < 2 {
                        return Ok(at);
                    }
                    if &rest[..2] != b"\r\n" {
                        return Err(HttpError::BadRequest("chunk data not followed by CRLF"));
                    }
                    at += 2;
                    self.state = ChunkState::Size;
                }
                ChunkState::Trailer => {
                    let Some(line_end) = rest.windows(2).position(|w| w == b"\r\n") else {
                        if self.trailer_bytes + rest.len() > trailer_bytes_max {
                            return Err(HttpError::HeaderTooLarge {
                                limit_bytes: trailer_bytes_max,
                            });
                        }
                        return Ok(at);
                    };
                    if rest[..line_end].iter().any(|&b| b == b'\r' || b == b'\n') {
                        return Err(HttpError::BadRequest("bare CR or LF in a trailer line"));
                    }
                    at += line_end + 2;
                    self.trailer_bytes += line_end + 2;
                    if self.trailer_bytes > trailer_bytes_max {
                        return Err(HttpError::HeaderTooLarge {
                            limit_bytes: trailer_bytes_max,
                        });
                    }
                    if line_end == 0 {
                        self.state = ChunkState::Done;
                    }
                }
            }
        }
    }
}

/// A line that ends in CRLF and has no other CR or LF.
fn is_crlf_line(line: &[u8]) -> bool {
    line.strip_suffix(b"\r\n")
        .is_some_and(|content| !content.iter().any(|&b| b == b'\r' || b == b'\n'))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX_BODY: usize = 1024;
    const MAX_HEAD: usize = 1024;

    #[test]
    fn a_bare_lf_or_cr_in_a_size_line_or_a_trailer_is_refused() {
        // (input, what the refusal says): httparse itself refuses a bare
        // CR in an extension; a bare LF it lets through, and it is caught.
        for (input, says) in [
            (&b"5;ext=a\nb\r\nhello\r\n0\r\n\r\n"[..], "bare CR or LF"),
            (b"5;ext\rx\r\nhello\r\n0\r\n\r\n", "invalid chunk size"),
            (b"5\r\nhello\r\n0\r\nX-T: a\nb\r\n\r\n", "bare CR or LF"),
        ] {
            let mut body = Vec::new();
            let result = ChunkedDecoder::default().decode(input, &mut body, 1 << 20, 1 << 10);
            assert!(
                matches!(result, Err(HttpError::BadRequest(m)) if m.contains(says)),
                "{:?}: {result:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn chunked_body_decodes_across_splits_with_extensions_and_trailers() {
        let wire = b"4;ext=1\r\nWiki\r\n5\r\npedia\r\n0\r\nX-Trailer: t\r\n\r\nNEXT";
        for split in 0..wire.len() {
            let mut decoder = ChunkedDecoder::default();
            let mut body = Vec::new();
            let used = decoder
                .decode(&wire[..split], &mut body, MAX_BODY, MAX_HEAD)
                .expect("first part");
            let mut rest = wire[used..].to_vec();
            let used2 = decoder
                .decode(&rest, &mut body, MAX_BODY, MAX_HEAD)
                .expect("second part");
            rest.drain(..used2);
            assert!(decoder.is_done(), "split {split}");
            assert_eq!(body, b"Wikipedia");
            assert_eq!(rest, b"NEXT");
        }
    }

    #[test]
    fn chunked_body_over_limit_and_bad_size() {
        let mut body = Vec::new();
        assert_eq!(
            ChunkedDecoder::default().decode(b"401\r\n", &mut body, MAX_BODY, MAX_HEAD),
            Err(HttpError::BodyTooLarge {
                limit_bytes: MAX_BODY
            })
        );
        assert_eq!(
            ChunkedDecoder::default().decode(b"zz\r\n", &mut body, MAX_BODY, MAX_HEAD),
            Err(HttpError::BadRequest("invalid chunk size"))
        );
        assert_eq!(
            ChunkedDecoder::default().decode(b"1\r\naXY", &mut body, MAX_BODY, MAX_HEAD),
            Err(HttpError::BadRequest("chunk data not followed by CRLF"))
        );
    }
}
