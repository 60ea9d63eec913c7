//! Tests of the FastCGI client: framing against hand-made records, and
//! whole requests against a real php-cgi.

use super::*;
use std::os::unix::net::{UnixListener, UnixStream};
use std::thread;
use std::time::{Duration, Instant};

const TEST_TIMEOUT: Duration = Duration::from_secs(10);

fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .collect()
}

fn record(record_type: u8, request_id: u16, content: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    encode_record(&mut out, record_type, request_id, content);
    out
}

fn end_request(request_id: u16, app_status: u32, protocol_status: u8) -> Vec<u8> {
    let mut body = [0u8; 8];
    body[0..4].copy_from_slice(&app_status.to_be_bytes());
    body[4] = protocol_status;
    record(FCGI_END_REQUEST, request_id, &body)
}

/// What a fake application parsed from one request.
#[derive(Debug, Default)]
struct SeenRequest {
    request_id: u16,
    role: u16,
    flags: u8,
    params: Vec<NameValuePair>,
    params_records: usize,
    stdin: Vec<u8>,
    stdin_records: usize,
}

fn read_record(stream: &mut UnixStream) -> io::Result<(u8, u16, Vec<u8>)> {
    let mut header = [0u8; 8];
    stream.read_exact(&mut header)?;
    assert_eq!(header[0], FCGI_VERSION_1);
    let length = usize::from(u16::from_be_bytes([header[4], header[5]]));
    let padding = usize::from(header[6]);
    assert_eq!(
        (RECORD_HEADER_BYTES + length + padding) % RECORD_ALIGN_BYTES,
        0
    );
    let mut content = vec![0u8; length + padding];
    stream.read_exact(&mut content)?;
    assert!(
        content[length..].iter().all(|&b| b == 0),
        "padding is zeros"
    );
    content.truncate(length);
    Ok((
        header[1],
        u16::from_be_bytes([header[2], header[3]]),
        content,
    ))
}

/// Reads one request the way an application would, up to the empty STDIN.
fn read_request(stream: &mut UnixStream) -> io::Result<SeenRequest> {
    let mut seen = SeenRequest::default();
    let (record_type, request_id, body) = read_record(stream)?;
    assert_eq!(record_type, FCGI_BEGIN_REQUEST);
    assert_eq!(body.len(), 8);
    seen.request_id = request_id;
    seen.role = u16::from_be_bytes([body[0], body[1]]);
    seen.flags = body[2];
    loop {
        let (record_type, id, content) = read_record(stream)?;
        assert_eq!(id, request_id);
        match record_type {
            FCGI_PARAMS if content.is_empty() => {}
            FCGI_PARAMS => {
                seen.params_records += 1;
                seen.params
                    .extend(decode_name_value_pairs(&content).expect("pairs"));
            }
            FCGI_STDIN if content.is_empty() => return Ok(seen),
            FCGI_STDIN => {
                seen.stdin_records += 1;
                seen.stdin.extend_from_slice(&content);
            }
            other => panic!("unexpected record type {other}"),
        }
    }
}

/// A fake application on the other end of a socket pair: `answer` gets
/// the parsed request and the stream, for each of `requests` requests.
fn fake_peer<F>(requests: usize, answer: F) -> (UnixStream, thread::JoinHandle<Vec<SeenRequest>>)
where
    F: Fn(&SeenRequest, &mut UnixStream) + Send + 'static,
{
    let (client, mut server) = UnixStream::pair().expect("socketpair");
    client
        .set_read_timeout(Some(TEST_TIMEOUT))
        .expect("timeout");
    client
        .set_write_timeout(Some(TEST_TIMEOUT))
        .expect("timeout");
    server
        .set_read_timeout(Some(TEST_TIMEOUT))
        .expect("timeout");
    let peer = thread::spawn(move || {
        let mut seen = Vec::new();
        for _ in 0..requests {
            let request = read_request(&mut server).expect("request");
            answer(&request, &mut server);
            seen.push(request);
        }
        seen
    });
    (client, peer)
}

fn hello_answer(request: &SeenRequest, stream: &mut UnixStream) {
    let mut out = record(
        FCGI_STDOUT,
        request.request_id,
        b"Content-type: text/plain\r\n\r\nhello",
    );
    out.extend(record(FCGI_STDERR, request.request_id, b"a warning\n"));
    out.extend(record(FCGI_STDOUT, request.request_id, b""));
    out.extend(end_request(request.request_id, 7, FCGI_REQUEST_COMPLETE));
    stream.write_all(&out).expect("write");
}

#[test]
fn name_value_pairs_short_and_long_lengths() {
    let long_name = "N".repeat(128);
    let long_value = vec![b'v'; 300_000];
    let mut out = Vec::new();
    encode_name_value_pair(&mut out, b"SHORT", b"v");
    assert_eq!(&out[..], b"\x05\x01SHORTv");
    out.clear();
    encode_name_value_pair(&mut out, &[b'a'; 127], b"");
    assert_eq!(out[0], 127);
    assert_eq!(out[1], 0);
    assert_eq!(out.len(), 2 + 127);
    out.clear();
    encode_name_value_pair(&mut out, long_name.as_bytes(), &long_value);
    assert_eq!(&out[0..4], &(128u32 | 0x8000_0000).to_be_bytes());
    assert_eq!(&out[4..8], &(300_000u32 | 0x8000_0000).to_be_bytes());
    assert_eq!(out.len(), name_value_pair_bytes(128, 300_000));

    let mut stream = Vec::new();
    encode_name_value_pair(&mut stream, b"SCRIPT_FILENAME", b"/srv/x.php");
    encode_name_value_pair(&mut stream, long_name.as_bytes(), b"");
    encode_name_value_pair(&mut stream, b"", &long_value);
    let pairs = decode_name_value_pairs(&stream).expect("decode");
    assert_eq!(pairs.len(), 3);
    assert_eq!(
        pairs[0],
        (b"SCRIPT_FILENAME".to_vec(), b"/srv/x.php".to_vec())
    );
    assert_eq!(pairs[1], (long_name.as_bytes().to_vec(), Vec::new()));
    assert_eq!(pairs[2], (Vec::new(), long_value));
}

#[test]
fn truncated_name_value_pairs_are_protocol_errors() {
    for bad in [
        &b"\x05"[..],                        // value length missing
        b"\x05\x01SHO",                      // name cut short
        b"\x80\x00\x00",                     // 4-byte length cut short
        b"\x01\xff\xff\xff\xffa",            // value length 2^31 - 1
        b"\xff\xff\xff\xff\xff\xff\xff\xff", // both maximal, no content
    ] {
        assert!(
            matches!(decode_name_value_pairs(bad), Err(FastCgiError::Protocol(_))),
            "{bad:?}"
        );
    }
    assert_eq!(decode_name_value_pairs(b"").expect("empty").len(), 0);
}

#[test]
fn records_are_framed_and_padded_to_eight_bytes() {
    assert_eq!(padding_bytes(0), 0);
    assert_eq!(padding_bytes(1), 7);
    assert_eq!(padding_bytes(8), 0);
    assert_eq!(padding_bytes(RECORD_CONTENT_BYTES_MAX), 1);
    let framed = record(FCGI_STDIN, 0x0102, b"hello");
    assert_eq!(&framed[..8], &[1, FCGI_STDIN, 0x01, 0x02, 0, 5, 3, 0]);
    assert_eq!(&framed[8..13], b"hello");
    assert_eq!(&framed[13..], &[0, 0, 0]);
    let empty = record(FCGI_PARAMS, 1, b"");
    assert_eq!(empty, vec![1, FCGI_PARAMS, 0, 1, 0, 0, 0, 0]);
    let full = record(FCGI_STDIN, 1, &[7u8; RECORD_CONTENT_BYTES_MAX]);
    assert_eq!(&full[4..7], &[0xff, 0xff, 1]);
    assert_eq!(full.len(), 8 + RECORD_CONTENT_BYTES_MAX + 1);
}

#[test]
fn request_sends_begin_params_stdin_and_reads_the_answer() {
    let (mut client, peer) = fake_peer(1, hello_answer);
    let sent = params(&[
        ("SCRIPT_FILENAME", "/srv/hello.php"),
        ("REQUEST_METHOD", "POST"),
    ]);
    let output = request(&mut client, 3, &sent, b"body bytes", 1024, true).expect("request");
    assert_eq!(output.stdout, b"Content-type: text/plain\r\n\r\nhello");
    assert_eq!(output.stderr, b"a warning\n");
    assert_eq!(output.app_status, 7);
    let seen = peer.join().expect("peer");
    assert_eq!(seen[0].request_id, 3);
    assert_eq!(seen[0].role, FCGI_RESPONDER);
    assert_eq!(seen[0].flags, FCGI_KEEP_CONN);
    assert_eq!(
        seen[0].params,
        vec![
            (b"SCRIPT_FILENAME".to_vec(), b"/srv/hello.php".to_vec()),
            (b"REQUEST_METHOD".to_vec(), b"POST".to_vec()),
        ]
    );
    assert_eq!(seen[0].stdin, b"body bytes");
}

#[test]
fn small_request_is_one_write() {
    struct CountingStream {
        writes: usize,
        reply: io::Cursor<Vec<u8>>,
    }
    impl Write for CountingStream {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            self.writes += 1;
            Ok(bytes.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    impl Read for CountingStream {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            self.reply.read(out)
        }
    }
    let mut reply = record(FCGI_STDOUT, 1, b"x");
    reply.extend(end_request(1, 0, FCGI_REQUEST_COMPLETE));
    let mut stream = CountingStream {
        writes: 0,
        reply: io::Cursor::new(reply),
    };
    let sent = params(&[("A", "1"), ("B", "2")]);
    let output = request(&mut stream, 1, &sent, &[1u8; 4000], 10, false).expect("request");
    assert_eq!(output.stdout, b"x");
    assert_eq!(stream.writes, 1);
}

#[test]
fn no_keep_conn_flag_without_keep_conn() {
    let (mut client, peer) = fake_peer(1, hello_answer);
    request(&mut client, 1, &[], b"", 1024, false).expect("request");
    assert_eq!(peer.join().expect("peer")[0].flags, 0);
}

#[test]
fn large_params_and_stdin_span_records() {
    let (mut client, peer) = fake_peer(1, hello_answer);
    let mut sent: Vec<(String, String)> = (0..100)
        .map(|i| (format!("HTTP_X_{i}"), "v".repeat(1000)))
        .collect();
    sent.push(("BIG".to_string(), "b".repeat(60_000)));
    let stdin: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    request(&mut client, 1, &sent, &stdin, 1024, true).expect("request");
    let seen = peer.join().expect("peer");
    assert_eq!(seen[0].params.len(), 101);
    assert_eq!(seen[0].params[100].1.len(), 60_000);
    assert!(
        seen[0].params_records >= 3,
        "{} records",
        seen[0].params_records
    );
    assert_eq!(seen[0].stdin, stdin);
    assert_eq!(seen[0].stdin_records, 5);
}

#[test]
fn params_that_do_not_fit_are_refused_before_writing() {
    let (mut client, _server) = UnixStream::pair().expect("socketpair");
    let too_long = params(&[("HUGE", &"x".repeat(RECORD_CONTENT_BYTES_MAX))]);
    let error = request(&mut client, 1, &too_long, b"", 10, true).expect_err("refused");
    assert!(matches!(&error, FastCgiError::Io(e) if e.kind() == ErrorKind::InvalidInput));
    let too_many: Vec<(String, String)> = (0..40)
        .map(|i| (format!("V{i}"), "x".repeat(30_000)))
        .collect();
    let error = request(&mut client, 1, &too_many, b"", 10, true).expect_err("refused");
    assert!(matches!(&error, FastCgiError::Io(e) if e.kind() == ErrorKind::InvalidInput));
    let error = request(&mut client, 0, &[], b"", 10, true).expect_err("id 0");
    assert!(matches!(&error, FastCgiError::Io(e) if e.kind() == ErrorKind::InvalidInput));
}

#[test]
fn split_records_are_reassembled() {
    let (mut client, peer) = fake_peer(1, |request, stream| {
        let id = request.request_id;
        let mut out = record(FCGI_STDOUT, id, b"Status: 201 Created\r\n\r\n");
        out.extend(record(FCGI_STDERR, id, b"err"));
        out.extend(record(FCGI_STDOUT, id, &[b'z'; 20_000]));
        // An UNKNOWN_TYPE management record in the middle is skipped.
        out.extend(record(FCGI_UNKNOWN_TYPE, 0, &[99, 0, 0, 0, 0, 0, 0, 0]));
        out.extend(record(FCGI_STDOUT, id, b""));
        out.extend(end_request(id, 0, FCGI_REQUEST_COMPLETE));
        // Odd-sized pieces, so headers, content and padding are all cut.
        for (i, piece) in out.chunks(7).enumerate() {
            stream.write_all(piece).expect("write");
            if i % 500 == 0 {
                thread::sleep(Duration::from_millis(1));
            }
        }
    });
    let output = request(&mut client, 9, &[], b"", 100_000, true).expect("request");
    let mut expected = b"Status: 201 Created\r\n\r\n".to_vec();
    expected.extend_from_slice(&[b'z'; 20_000]);
    assert_eq!(output.stdout, expected);
    assert_eq!(output.stderr, b"err");
    peer.join().expect("peer");
}

#[test]
fn stdout_over_the_cap_stops_the_request() {
    let (mut client, peer) = fake_peer(1, |request, stream| {
        let id = request.request_id;
        for _ in 0..4 {
            // The client stops reading; later writes may fail.
            if stream
                .write_all(&record(FCGI_STDOUT, id, &[b'o'; 1000]))
                .is_err()
            {
                return;
            }
        }
        let _ = stream.write_all(&end_request(id, 0, FCGI_REQUEST_COMPLETE));
    });
    let error = request(&mut client, 1, &[], b"", 2500, true).expect_err("too large");
    assert!(matches!(
        error,
        FastCgiError::StdoutTooLarge { limit_bytes: 2500 }
    ));
    peer.join().expect("peer");

    // Exactly the cap is fine.
    let (mut client, peer) = fake_peer(1, |request, stream| {
        let mut out = record(FCGI_STDOUT, request.request_id, &[b'o'; 2500]);
        out.extend(end_request(request.request_id, 0, FCGI_REQUEST_COMPLETE));
        stream.write_all(&out).expect("write");
    });
    let output = request(&mut client, 1, &[], b"", 2500, true).expect("at the cap");
    assert_eq!(output.stdout.len(), 2500);
    peer.join().expect("peer");
}

#[test]
fn stderr_is_capped_and_the_excess_dropped() {
    let (mut client, peer) = fake_peer(1, |request, stream| {
        let id = request.request_id;
        for _ in 0..3 {
            stream
                .write_all(&record(FCGI_STDERR, id, &[b'e'; 40_000]))
                .expect("write");
        }
        let mut out = record(FCGI_STDOUT, id, b"ok");
        out.extend(end_request(id, 0, FCGI_REQUEST_COMPLETE));
        stream.write_all(&out).expect("write");
    });
    let output = request(&mut client, 1, &[], b"", 100, true).expect("request");
    assert_eq!(output.stderr.len(), STDERR_BYTES_MAX);
    assert_eq!(output.stdout, b"ok");
    peer.join().expect("peer");
}

#[test]
fn peer_closing_early_is_connection_closed() {
    // Closes after reading the request.
    let (mut client, peer) = fake_peer(1, |_, stream| {
        let _ = stream.shutdown(std::net::Shutdown::Both);
    });
    let error = request(&mut client, 1, &[], b"", 100, true).expect_err("closed");
    assert!(matches!(error, FastCgiError::ConnectionClosed), "{error:?}");
    peer.join().expect("peer");

    // Closes in the middle of a record.
    let (mut client, peer) = fake_peer(1, |request, stream| {
        let out = record(FCGI_STDOUT, request.request_id, b"partial output");
        stream.write_all(&out[..12]).expect("write");
        let _ = stream.shutdown(std::net::Shutdown::Both);
    });
    let error = request(&mut client, 1, &[], b"", 100, true).expect_err("closed");
    assert!(matches!(error, FastCgiError::ConnectionClosed), "{error:?}");
    peer.join().expect("peer");

    // Gone before the request is written.
    let (mut client, server) = UnixStream::pair().expect("socketpair");
    drop(server);
    let error = request(&mut client, 1, &[], b"", 100, true).expect_err("closed");
    assert!(matches!(error, FastCgiError::ConnectionClosed), "{error:?}");
}

fn answer_with(bytes: Vec<u8>) -> Result<FastCgiOutput, FastCgiError> {
    let (mut client, peer) = fake_peer(1, move |_, stream| {
        stream.write_all(&bytes).expect("write");
    });
    let result = request(&mut client, 5, &[], b"", 1000, true);
    peer.join().expect("peer");
    result
}

#[test]
fn malformed_answers_are_protocol_errors_or_rejections() {
    let mut wrong_version = end_request(5, 0, 0);
    wrong_version[0] = 2;
    assert!(matches!(
        answer_with(wrong_version),
        Err(FastCgiError::Protocol(_))
    ));

    let other_id = record(FCGI_STDOUT, 6, b"x");
    assert!(matches!(
        answer_with(other_id),
        Err(FastCgiError::Protocol(_))
    ));

    let short_end = record(FCGI_END_REQUEST, 5, &[0, 0, 0]);
    assert!(matches!(
        answer_with(short_end),
        Err(FastCgiError::Protocol(_))
    ));

    let params_back = record(FCGI_PARAMS, 5, b"");
    assert!(matches!(
        answer_with(params_back),
        Err(FastCgiError::Protocol(_))
    ));

    let unknown_type = record(42, 5, b"");
    assert!(matches!(
        answer_with(unknown_type),
        Err(FastCgiError::Protocol(_))
    ));

    let mut trailing = end_request(5, 0, 0);
    trailing.extend(record(FCGI_STDOUT, 5, b"late"));
    assert!(matches!(
        answer_with(trailing),
        Err(FastCgiError::Protocol(_))
    ));

    let overloaded = end_request(5, 0, FCGI_OVERLOADED);
    assert!(matches!(
        answer_with(overloaded),
        Err(FastCgiError::Rejected {
            protocol_status: FCGI_OVERLOADED
        })
    ));

    // Large padding on a peer record is legal.
    let mut padded = vec![1, FCGI_STDOUT, 0, 5, 0, 2, 255, 0, b'h', b'i'];
    padded.extend_from_slice(&[0xAA; 255]);
    padded.extend(end_request(5, 0, 0));
    assert_eq!(answer_with(padded).expect("padded").stdout, b"hi");
}

#[test]
fn endless_stderr_is_bounded() {
    let (mut client, peer) = fake_peer(1, |request, stream| {
        let chunk = record(
            FCGI_STDERR,
            request.request_id,
            &[b'e'; RECORD_CONTENT_BYTES_MAX],
        );
        let chunks = RESPONSE_OVERHEAD_BYTES_MAX / RECORD_CONTENT_BYTES_MAX + 2;
        for _ in 0..chunks {
            if stream.write_all(&chunk).is_err() {
                return;
            }
        }
    });
    let error = request(&mut client, 1, &[], b"", 10, true).expect_err("bounded");
    assert!(matches!(error, FastCgiError::Protocol(_)), "{error:?}");
    drop(client);
    peer.join().expect("peer");
}

#[test]
fn kept_connection_serves_requests_in_turn() {
    let (mut client, peer) = fake_peer(3, hello_answer);
    for id in 1..=3u16 {
        let output = request(&mut client, id, &[], b"", 1024, true).expect("request");
        assert_eq!(output.stdout, b"Content-type: text/plain\r\n\r\nhello");
    }
    let seen = peer.join().expect("peer");
    assert_eq!(
        seen.iter().map(|s| s.request_id).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
}

#[test]
fn silence_is_a_timeout() {
    let (mut client, _server) = UnixStream::pair().expect("socketpair");
    client
        .set_read_timeout(Some(Duration::from_millis(50)))
        .expect("timeout");
    let error = request(&mut client, 1, &[], b"", 10, true).expect_err("timeout");
    assert!(error.is_timeout(), "{error:?}");
    assert!(!FastCgiError::ConnectionClosed.is_timeout());
}

#[test]
fn get_values_round_trip() {
    let (mut client, mut server) = UnixStream::pair().expect("socketpair");
    let peer = thread::spawn(move || {
        let (record_type, id, content) = read_record(&mut server).expect("record");
        assert_eq!((record_type, id), (FCGI_GET_VALUES, 0));
        let names = decode_name_value_pairs(&content).expect("pairs");
        let mut answer = Vec::new();
        for (name, _) in names {
            encode_name_value_pair(&mut answer, &name, b"1");
        }
        server
            .write_all(&record(FCGI_GET_VALUES_RESULT, 0, &answer))
            .expect("write");
    });
    let values = get_values(&mut client, &["FCGI_MAX_CONNS", "FCGI_MPXS_CONNS"]).expect("values");
    assert_eq!(
        values,
        vec![
            ("FCGI_MAX_CONNS".to_string(), "1".to_string()),
            ("FCGI_MPXS_CONNS".to_string(), "1".to_string()),
        ]
    );
    peer.join().expect("peer");
}

// ---- real php-cgi ------------------------------------------------------

const PHP_CGI: &str = "/usr/bin/php-cgi";
const PRELUDE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/runtimes/php/prelude.php");
const PHP_STDOUT_BYTES_MAX: usize = 16 * 1024 * 1024;

/// A php-cgi serving FastCGI on a listening socket passed as its fd 0,
/// killed when dropped.
struct PhpHost {
    child: std::process::Child,
    dir: std::path::PathBuf,
    socket: std::path::PathBuf,
}

impl PhpHost {
    fn start(name: &str, with_prelude: bool) -> Option<PhpHost> {
        use std::os::fd::OwnedFd;
        use std::process::{Command, Stdio};
        if !std::path::Path::new(PHP_CGI).exists() {
            println!("skipped: {PHP_CGI} is not installed (apt-get install php-cgi)");
            return None;
        }
        let dir = std::env::temp_dir().join(format!("fastcgi-test-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        let socket = dir.join("php.sock");
        let listener = UnixListener::bind(&socket).expect("bind");
        let mut command = Command::new(PHP_CGI);
        if with_prelude && std::path::Path::new(PRELUDE).exists() {
            command
                .arg("-d")
                .arg(format!("auto_prepend_file={PRELUDE}"));
        }
        // The worker's own settings, so these tests speak to the php-cgi
        // it runs.
        for setting in super::super::php::PHP_SETTINGS {
            command.arg("-d").arg(setting);
        }
        let child = command
            .envs(super::super::php::host_env())
            .stdin(Stdio::from(OwnedFd::from(listener)))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn php-cgi");
        Some(PhpHost { child, dir, socket })
    }

    /// Writes a script whose mtime is in the past, so opcache caches it
    /// at once (files younger than opcache.file_update_protection are not).
    fn script(&self, name: &str, source: &str) -> String {
        let path = self.dir.join(name);
        std::fs::write(&path, source).expect("write script");
        let past = std::time::SystemTime::now() - Duration::from_secs(60);
        std::fs::File::options()
            .write(true)
            .open(&path)
            .and_then(|file| file.set_modified(past))
            .expect("mtime");
        path.to_string_lossy().into_owned()
    }

    fn connect(&self) -> UnixStream {
        let stream = UnixStream::connect(&self.socket).expect("connect");
        stream
            .set_read_timeout(Some(TEST_TIMEOUT))
            .expect("timeout");
        stream
            .set_write_timeout(Some(TEST_TIMEOUT))
            .expect("timeout");
        stream
    }
}

impl Drop for PhpHost {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A GET of `script` on a kept connection.
fn get_script<S: Read + Write>(
    stream: &mut S,
    request_id: u16,
    script: &str,
) -> Result<FastCgiOutput, FastCgiError> {
    request(
        stream,
        request_id,
        &cgi_params(script, "GET", "", 0),
        b"",
        PHP_STDOUT_BYTES_MAX,
        true,
    )
}

fn cgi_params(script: &str, method: &str, query: &str, body_len: usize) -> Vec<(String, String)> {
    params(&[
        ("GATEWAY_INTERFACE", "CGI/1.1"),
        ("SERVER_PROTOCOL", "HTTP/1.1"),
        ("SERVER_SOFTWARE", "corefn"),
        ("SCRIPT_FILENAME", script),
        ("SCRIPT_NAME", "/fn"),
        ("REQUEST_URI", "/fn"),
        ("REQUEST_METHOD", method),
        ("QUERY_STRING", query),
        ("CONTENT_TYPE", "application/json"),
        ("CONTENT_LENGTH", &body_len.to_string()),
        ("HTTP_HOST", "localhost"),
        ("REMOTE_ADDR", "127.0.0.1"),
        ("REDIRECT_STATUS", "200"),
    ])
}

const HELLO_PHP: &str =
    "<?php\nheader('Content-Type: text/plain; charset=utf-8');\necho \"Hello from PHP!\\n\";\n";

#[test]
fn real_php_cgi_kept_and_fresh_connections() {
    let Some(host) = PhpHost::start("hello", true) else {
        return;
    };
    let hello = host.script("hello.php", HELLO_PHP);
    let expected = b"Content-Type: text/plain; charset=utf-8\r\n\r\nHello from PHP!\n";

    let mut kept = host.connect();
    for id in 1..=5u16 {
        let output = get_script(&mut kept, id, &hello).expect("kept");
        assert_eq!(
            output.stdout,
            expected,
            "{}",
            String::from_utf8_lossy(&output.stdout)
        );
        assert_eq!(output.stderr, b"");
        assert_eq!(output.app_status, 0);
    }
    drop(kept);

    for _ in 0..5 {
        let mut fresh = host.connect();
        let params = cgi_params(&hello, "GET", "", 0);
        let output =
            request(&mut fresh, 1, &params, b"", PHP_STDOUT_BYTES_MAX, false).expect("fresh");
        assert_eq!(output.stdout, expected);
        // Without FCGI_KEEP_CONN php-cgi closes the connection.
        let mut rest = Vec::new();
        fresh.read_to_end(&mut rest).expect("eof");
        assert!(rest.is_empty());
    }

    // The body arrives as php://input; the query as $_GET.
    let echo = host.script(
        "echo.php",
        "<?php\nheader('Content-Type: application/json');\necho json_encode(['body' => file_get_contents('php://input'), 'method' => $_SERVER['REQUEST_METHOD'], 'query' => $_GET]);\n",
    );
    let body = br#"{"a":1}"#;
    let mut kept = host.connect();
    let params = cgi_params(&echo, "POST", "x=1", body.len());
    let output = request(&mut kept, 1, &params, body, PHP_STDOUT_BYTES_MAX, true).expect("echo");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        text.ends_with(r#"{"body":"{\"a\":1}","method":"POST","query":{"x":"1"}}"#),
        "{text}"
    );

    // A management probe on its own connection. php-cgi (one process)
    // serves one connection at a time: while `kept` is open it would
    // never accept the probe, so close it first.
    drop(kept);
    let mut probe = host.connect();
    let values = get_values(&mut probe, &["FCGI_MAX_CONNS", "FCGI_MPXS_CONNS"]).expect("values");
    assert!(
        values.iter().any(|(name, _)| name == "FCGI_MPXS_CONNS"),
        "{values:?}"
    );

    // php-cgi goes on reading requests on the probe's connection.
    let output = get_script(&mut probe, 1, &hello).expect("request after GET_VALUES");
    assert_eq!(output.stdout, expected);
    drop(probe);

    // The host serves a kept connection again afterwards.
    let mut kept = host.connect();
    let output = get_script(&mut kept, 2, &hello).expect("again");
    assert_eq!(output.stdout, expected);
}

#[test]
fn real_php_cgi_errors_reach_fcgi_stderr_with_the_error_header() {
    if !std::path::Path::new(PRELUDE).exists() {
        println!("skipped: {PRELUDE} not found");
        return;
    }
    let Some(host) = PhpHost::start("errors", true) else {
        return;
    };
    let boom = host.script(
        "boom.php",
        "<?php\necho 'discarded';\nfunction f() { throw new RuntimeException(\"boom from php\"); }\nf();\n",
    );
    let fatal = host.script(
        "fatal.php",
        "<?php\necho 'discarded';\nundefined_function_call();\n",
    );
    let memory = host.script(
        "memory.php",
        "<?php\nini_set('memory_limit', '8M');\n$a = [];\nwhile (true) { $a[] = str_repeat('x', 4096); }\n",
    );
    let mut kept = host.connect();

    let output = get_script(&mut kept, 1, &boom).expect("boom");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stdout.starts_with("Status: 500 Internal Server Error\r\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains("\r\nX-Corefn-Function-Error: RuntimeException: boom from php\r\n"),
        "{stdout}"
    );
    assert!(!stdout.contains("discarded"), "{stdout}");
    assert!(
        stderr.starts_with("PHP Fatal error:  Uncaught RuntimeException: boom from php in "),
        "{stderr}"
    );
    assert!(stderr.contains("Stack trace:\n#0 "), "{stderr}");
    assert_eq!(output.app_status, 0);

    let output = get_script(&mut kept, 2, &fatal).expect("fatal");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains(
            "X-Corefn-Function-Error: Error: Call to undefined function undefined_function_call()"
        ),
        "{stdout}"
    );

    let output = get_script(&mut kept, 3, &memory).expect("memory");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stdout.contains(
            "X-Corefn-Function-Error: Fatal error: Allowed memory size of 8388608 bytes exhausted"
        ),
        "{stdout}"
    );
    assert!(
        stderr.starts_with("PHP Fatal error:  Allowed memory size"),
        "{stderr}"
    );
    // A fatal error ends the script with exit status 255; php-cgi still
    // reports appStatus 0.
    assert_eq!(output.app_status, 0);

    // The host survives all three on the same connection.
    let hello = host.script("hello.php", HELLO_PHP);
    let output = get_script(&mut kept, 4, &hello).expect("hello");
    assert!(output.stdout.ends_with(b"Hello from PHP!\n"));
}

#[test]
fn real_php_cgi_stdout_cap() {
    let Some(host) = PhpHost::start("cap", true) else {
        return;
    };
    let big = host.script("big.php", "<?php\necho str_repeat('x', 100000);\n");
    let mut stream = host.connect();
    let error = request(
        &mut stream,
        1,
        &cgi_params(&big, "GET", "", 0),
        b"",
        50_000,
        true,
    )
    .expect_err("over the cap");
    assert!(matches!(
        error,
        FastCgiError::StdoutTooLarge {
            limit_bytes: 50_000
        }
    ));
}

fn median_and_p99_micros(mut samples: Vec<Duration>) -> (u128, u128) {
    samples.sort();
    let at = |q: usize| samples[(samples.len() - 1) * q / 100].as_micros();
    (at(50), at(99))
}

/// `cargo test --release -- --ignored --nocapture round_trip`
#[test]
#[ignore]
fn round_trip_latency_real_php_cgi() {
    const REQUESTS: usize = 2_000;
    const WARMUP_REQUESTS: usize = 200;
    for with_prelude in [true, false] {
        let Some(host) = PhpHost::start(&format!("bench-{with_prelude}"), with_prelude) else {
            return;
        };
        let hello = host.script("hello.php", HELLO_PHP);
        let params = cgi_params(&hello, "GET", "", 0);

        let mut kept = host.connect();
        for id in 0..WARMUP_REQUESTS {
            request(
                &mut kept,
                (id % 60_000 + 1) as u16,
                &params,
                b"",
                1 << 20,
                true,
            )
            .expect("warmup");
        }
        let mut samples = Vec::with_capacity(REQUESTS);
        let started = Instant::now();
        for id in 0..REQUESTS {
            let t = Instant::now();
            let output = request(
                &mut kept,
                (id % 60_000 + 1) as u16,
                &params,
                b"",
                1 << 20,
                true,
            )
            .expect("kept");
            samples.push(t.elapsed());
            assert!(output.stdout.ends_with(b"Hello from PHP!\n"));
        }
        let kept_total = started.elapsed();
        let (kept_median, kept_p99) = median_and_p99_micros(samples);
        drop(kept);

        let mut samples = Vec::with_capacity(REQUESTS);
        let started = Instant::now();
        for _ in 0..REQUESTS {
            let t = Instant::now();
            let mut fresh = host.connect();
            let output = request(&mut fresh, 1, &params, b"", 1 << 20, false).expect("fresh");
            samples.push(t.elapsed());
            assert!(output.stdout.ends_with(b"Hello from PHP!\n"));
        }
        let fresh_total = started.elapsed();
        let (fresh_median, fresh_p99) = median_and_p99_micros(samples);
        println!(
            "php-cgi hello.php (prelude: {with_prelude}), {REQUESTS} requests each: \
             kept connection median {kept_median} us p99 {kept_p99} us ({:.0} req/s); \
             new connection median {fresh_median} us p99 {fresh_p99} us ({:.0} req/s)",
            REQUESTS as f64 / kept_total.as_secs_f64(),
            REQUESTS as f64 / fresh_total.as_secs_f64(),
        );
    }
}
