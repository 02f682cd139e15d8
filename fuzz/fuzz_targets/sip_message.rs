//! Fuzz target `sip_message`: arbitrary bytes as one UDP datagram through
//! `audin_server::sip::signalling::parse_message`, the endpoint's own path
//! (rsipstack's parser as its UDP transport calls it, the transport's
//! `received`/`rport`, our `check_message`, the transaction key, what the
//! trunk logic reads), then the INVITE admission (`ParsedSip::invite_info`)
//! and number extraction (`trunk::inbound_parties`) the call logic runs.
//! Each input is read as coming from an IPv4 and from an IPv6 source.
//!
//! Invariants checked (any violation aborts the run):
//! - no panic, in rsipstack or in our code;
//! - bounded work: the bytes allocated by one parse (in total, not only at
//!   the peak) stay linear in the input, at most [`ALLOC_PER_BYTE`] per
//!   input byte plus [`ALLOC_FIXED`] (a counting global allocator; only
//!   the first 8 KiB of a datagram are read, as the transport does);
//! - a message we accept is one rsipstack's transaction layer can key
//!   (`SipParseError::Unkeyed` never happens: no request passes our check
//!   only to be dropped unanswered), and it is what the check promised: at
//!   least one Via, From tag, Call-ID, CSeq number below 2**31 with the
//!   request's method, a Content-Length equal to the body's length;
//! - the same bytes read the same way twice (no hidden state);
//! - any number extracted is E.164 (`validate_e164`) and is exactly the
//!   digits of the user part it came from (checked by an independent
//!   reading below), or there is none (404); the caller shown to operators
//!   is that E.164 number or printable text of at most 32 characters;
//! - every text we would log or show passes
//!   `audin_protocol::is_printable_text` once escaped as the code escapes
//!   it: fields through `Untrusted`, the error's `Display`, the end cause
//!   of a response (`cause_of_status`), the caller.
//!
//! `AUDIN_FUZZ_TRACE=1` prints each verdict and the bytes it allocated.
#![no_main]

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};

use audin_protocol::{Untrusted, is_printable_text, validate_e164};
use audin_server::sip::signalling::{
    MAX_DATAGRAM_BYTES, ParsedSip, SipParseError, SipTransport, StartLine, parse_message,
    unescape_user,
};
use audin_server::sip::trunk::{caller_of, cause_of_status, inbound_parties, number_of_user};
use libfuzzer_sys::fuzz_target;

/// Bytes one parse may allocate in total per input byte. rsipstack copies
/// every header name and value and parses the typed headers it needs; the
/// top Via is parsed five times (the transport's `received`, our check,
/// the transaction key, the source), To twice. Measured: ~20 bytes per
/// byte for real messages, 15 for 700 one-line headers, 154 for a To with
/// 2,500 `;p` parameters, 320 for a top Via with 1,200 of them (each a
/// `Param` in a doubling `Vec`), the worst shape found. At most 8 KiB are
/// read, so a datagram costs at most 4 MiB of allocation; a step that is
/// quadratic in the header count exceeds it on the `stress-*` seeds.
const ALLOC_PER_BYTE: usize = 512;
/// Fixed allowance of one parse (the message, small strings, rounding).
const ALLOC_FIXED: usize = 64 * 1024;
/// Longest caller text shown to operators when it is not a number.
const MAX_CALLER_CHARS: usize = 32;

// ── a counting allocator, for the bounded-work check ────────────────────

struct Counting;

/// Bytes allocated since the counter was last reset (frees not counted:
/// this is work, not memory held).
static ALLOCATED: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded unchanged to `System`; the counter is
// bookkeeping only.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATED.fetch_add(layout.size(), Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCATED.fetch_add(layout.size(), Ordering::Relaxed);
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATED.fetch_add(new_size, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn tracing() -> bool {
    std::env::var_os("AUDIN_FUZZ_TRACE").is_some()
}

/// At most 300 characters of the input, escaped, for failure messages.
fn short(data: &[u8]) -> String {
    let text = String::from_utf8_lossy(data);
    let head: String = text.chars().take(300).collect();
    format!(
        "{head:?}{}",
        if text.chars().count() > 300 {
            "…"
        } else {
            ""
        }
    )
}

fuzz_target!(|data: &[u8]| {
    for source in ["192.0.2.7:5060", "[2001:db8::7]:5070"] {
        let source: SocketAddr = source.parse().unwrap();
        let result = parse_bounded(data, source);
        let again = parse_message(data, source);
        assert_eq!(
            result,
            again,
            "two readings differ\n input: {}",
            short(data)
        );
        if tracing() {
            eprintln!("{source}: {result:?}");
        }
        match &result {
            Ok(parsed) => check_parsed(data, parsed),
            Err(e) => check_error(data, e),
        }
    }
});

/// `parse_message`, checking the bytes it allocates.
fn parse_bounded(data: &[u8], source: SocketAddr) -> Result<ParsedSip, SipParseError> {
    let read = data.len().min(MAX_DATAGRAM_BYTES);
    ALLOCATED.store(0, Ordering::Relaxed);
    let result = parse_message(data, source);
    let allocated = ALLOCATED.load(Ordering::Relaxed);
    let limit = ALLOC_PER_BYTE * read + ALLOC_FIXED;
    if tracing() {
        eprintln!("parse_message: {allocated} bytes allocated for {read} input bytes");
    }
    assert!(
        allocated <= limit,
        "parse_message allocated {allocated} bytes for {read} input bytes (limit {limit})\n input: {}",
        short(data)
    );
    result
}

fn check_error(data: &[u8], e: &SipParseError) {
    if let SipParseError::Unkeyed(why) = e {
        panic!(
            "passed our check, but rsipstack's transaction layer drops it unanswered: {why}\n input: {}",
            short(data)
        );
    }
    let shown = e.to_string();
    assert!(
        is_printable_text(&shown),
        "error text not printable: {shown:?}"
    );
    if let Some(status) = e.status() {
        assert!((400..=599).contains(&status), "{e:?} → {status}");
    }
}

fn check_parsed(data: &[u8], p: &ParsedSip) {
    let context = || format!("\n parsed: {p:?}\n input: {}", short(data));
    // What check_message promised.
    assert!(p.via_count >= 1, "no Via{}", context());
    assert!(p.from_tag.is_some(), "no From tag{}", context());
    assert!(!p.call_id.trim().is_empty(), "empty Call-ID{}", context());
    assert!(p.cseq < 1 << 31, "CSeq {}{}", p.cseq, context());
    if let Some(len) = p.content_length {
        assert_eq!(len, p.body.len(), "Content-Length lies{}", context());
    }
    // Every field we may log, escaped as the code escapes it.
    let mut logged: Vec<&str> = vec![&p.call_id, &p.cseq_method];
    logged.extend(p.request_user.as_deref());
    logged.extend(p.to_user.as_deref());
    logged.extend(p.from_user.as_deref());
    logged.extend(p.content_type.as_deref());
    match &p.start {
        StartLine::Request { method, uri } => {
            assert_eq!(method, &p.cseq_method, "CSeq method{}", context());
            logged.push(method);
            logged.push(uri);
        }
        StartLine::Response { status, reason } => {
            logged.push(reason);
            for heard in [false, true] {
                let cause = cause_of_status(*status, reason, heard).to_string();
                assert!(is_printable_text(&cause), "end cause {cause:?}");
            }
        }
    }
    for field in logged {
        for text in [field.to_owned(), unescape_user(field)] {
            let shown = Untrusted(&text).to_string();
            assert!(is_printable_text(&shown), "log text {shown:?}");
        }
    }
    for user in [&p.request_user, &p.to_user, &p.from_user]
        .into_iter()
        .flatten()
    {
        check_number(user);
    }
    let is_invite = matches!(&p.start, StartLine::Request { method, .. } if method == "INVITE");
    if !is_invite {
        return;
    }
    // The INVITE admission and the number extraction of the call logic.
    let Ok(info) = p.invite_info(SipTransport::Udp) else {
        return;
    };
    assert_eq!(
        info.sdp.as_deref().unwrap_or_default(),
        &p.body[..],
        "the offer is the body{}",
        context()
    );
    let Some((to, from)) = inbound_parties(&info) else {
        // 404: neither user part names a number.
        for user in [&p.request_user, &p.to_user].into_iter().flatten() {
            assert_eq!(number_of_user(user), None, "{user:?}{}", context());
        }
        return;
    };
    assert!(
        validate_e164(&to).is_ok(),
        "called number {to:?}{}",
        context()
    );
    let expected = p
        .request_user
        .as_deref()
        .and_then(number_of_user)
        .or_else(|| p.to_user.as_deref().and_then(number_of_user));
    assert_eq!(Some(&to), expected.as_ref(), "{}", context());
    assert_eq!(from, caller_of(p.from_user.as_deref()));
    check_caller(&from);
}

/// `number_of_user` against an independent reading: the user part up to its
/// first unescaped `;`, `%XX` decoded, `+` optional, then only digits and
/// the visual separators `-` `.` `(` `)`; E.164 has a non-zero first digit
/// and 2 to 15 digits.
fn check_number(user: &str) {
    let got = number_of_user(user);
    let head = user.split(';').next().unwrap_or("");
    let decoded = independent_unescape(head.as_bytes());
    let expected = std::str::from_utf8(&decoded).ok().and_then(|s| {
        let s = s.strip_prefix('+').unwrap_or(s);
        if !s.chars().all(|c| c.is_ascii_digit() || "-.()".contains(c)) {
            return None;
        }
        let digits: String = s.chars().filter(char::is_ascii_digit).collect();
        let ok = (2..=15).contains(&digits.len()) && !digits.starts_with('0');
        ok.then(|| format!("+{digits}"))
    });
    assert_eq!(got, expected, "number of user part {user:?}");
    if let Some(n) = &got {
        assert!(validate_e164(n).is_ok(), "{n:?}");
    }
}

/// `%XX` decoding written apart from `unescape_user`.
fn independent_unescape(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut rest = bytes;
    while let Some((&b, tail)) = rest.split_first() {
        if b == b'%'
            && tail.len() >= 2
            && tail[0].is_ascii_hexdigit()
            && tail[1].is_ascii_hexdigit()
        {
            let hex = std::str::from_utf8(&tail[..2]).unwrap();
            out.push(u8::from_str_radix(hex, 16).unwrap());
            rest = &tail[2..];
        } else {
            out.push(b);
            rest = tail;
        }
    }
    out
}

/// The caller shown to operators: a number, or short printable text.
fn check_caller(from: &str) {
    if validate_e164(from).is_ok() {
        return;
    }
    assert!(!from.is_empty(), "empty caller");
    assert!(is_printable_text(from), "caller {from:?} is not printable");
    assert!(
        from.chars().count() <= MAX_CALLER_CHARS,
        "caller {from:?} is longer than {MAX_CALLER_CHARS}"
    );
}
