//! The `static` runtime: status, headers and body from the descriptor,
//! rendered once when the route table is built so that answering costs one
//! copy into the connection's output buffer.

use crate::http::encode::{self, ConnectionHeader};
use crate::runtimes::descriptor::Descriptor;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticResponse {
    status: u16,
    /// Status line, descriptor headers and content-length, without the
    /// gateway-owned date/connection lines and the blank line.
    head: Box<[u8]>,
    body: Box<[u8]>,
}

impl StaticResponse {
    pub fn new(descriptor: &Descriptor) -> StaticResponse {
        let body = descriptor.body.clone().unwrap_or_default().into_bytes();
        let mut head = Vec::with_capacity(128);
        encode::push_status_line(&mut head, descriptor.status);
        for (name, value) in descriptor.response_headers() {
            encode::push_header(&mut head, &name, &value);
        }
        encode::push_content_length(&mut head, body.len());
        StaticResponse {
            status: descriptor.status,
            head: head.into_boxed_slice(),
            body: body.into_boxed_slice(),
        }
    }

    pub fn status(&self) -> u16 {
        self.status
    }

    pub fn body_len(&self) -> usize {
        self.body.len()
    }

    pub fn write(
        &self,
        out: &mut Vec<u8>,
        head_lines: &[u8],
        connection: ConnectionHeader,
        head_only: bool,
    ) {
        out.extend_from_slice(&self.head);
        encode::push_head_end(out, head_lines, connection);
        if !head_only {
            out.extend_from_slice(&self.body);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::date_line;

    #[test]
    fn renders_descriptor_status_headers_and_body() {
        let descriptor = Descriptor::parse(
            r#"{"runtime":"static","status":201,"body":"made","headers":{"X-Demo":"1"}}"#,
        )
        .expect("valid");
        let response = StaticResponse::new(&descriptor);
        assert_eq!(response.status(), 201);
        let mut out = Vec::new();
        response.write(&mut out, &date_line(0), ConnectionHeader::Implicit, false);
        let text = String::from_utf8(out).expect("ascii");
        assert!(text.starts_with("HTTP/1.1 201 Created\r\n"), "{text}");
        assert!(text.contains("x-demo: 1\r\ncontent-type: text/plain\r\ncontent-length: 4\r\n"));
        assert!(text.ends_with("\r\n\r\nmade"));
    }
}
