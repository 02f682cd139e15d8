//! RFC 4475 ("SIP Torture Test Messages") against the SIP trunk: every
//! message of `../shared/sip/rfc4475/` goes through
//! `audin_server::sip::signalling::parse_message`, which is the endpoint's
//! own path (rsipstack's parser as its UDP transport calls it, the
//! transport's `received`/`rport`, our `check_message` that the endpoint
//! runs on every message before a transaction exists, the transaction
//! layer's key, then what the trunk logic reads). None may panic; each is
//! parsed or refused as the RFC says, but for the deviations listed below,
//! which are asserted too (so a change of rsipstack shows up here). Then
//! every message goes over UDP to a running `SipEndpoint`, which answers or
//! ignores it, rings nobody, and still answers OPTIONS afterwards.
//!
//! "refused N": our check answers N statelessly, before any transaction
//! (with a `Warning: 399` saying why). "dropped": nothing is answered
//! (rsipstack's parser refused the bytes, or a response failed the check).
//! "parsed": the stack processes it; what it then answers is in brackets.
//!
//! | RFC 4475 | message | the RFC says | we do |
//! |---|---|---|---|
//! | 3.1.1.1 | wsinv | parse | refused 400: **deviation 1** |
//! | 3.1.1.2 | intmeth | parse | dropped: **deviation 2** |
//! | 3.1.1.3 | esc01 | parse; users `sips:user@example.com`, `user`, `I have spaces` | parsed (404: not our number) |
//! | 3.1.1.4 | escnull | parse; users hold NUL | parsed (405: not a registrar) |
//! | 3.1.1.5 | esc02 | parse; `RE%47IST%45R` is not REGISTER | dropped: **deviation 2** |
//! | 3.1.1.6 | lwsdisp | parse | parsed (200) |
//! | 3.1.1.7 | longreq | parse | parsed (404) |
//! | 3.1.1.8 | dblreq | parse the REGISTER, ignore the trailing INVITE | parsed (405) |
//! | 3.1.1.9 | semiuri | parse; user `user;par=u%40example.net` | parsed (200) |
//! | 3.1.1.10 | transports | parse | parsed (200) |
//! | 3.1.1.11 | mpart01 | parse | parsed (405: MESSAGE) |
//! | 3.1.1.12 | unreason | parse | parsed (no transaction: dropped) |
//! | 3.1.1.13 | noreason | parse | parsed (idem); **deviation 5** |
//! | 3.1.2.1 | badinv01 | 400 | refused 400 |
//! | 3.1.2.2 | clerr | 400 / discard (UDP) | refused 400 |
//! | 3.1.2.3 | ncl | error | refused 400 |
//! | 3.1.2.4 | scalar02 | 400 | refused 400 |
//! | 3.1.2.5 | scalarlg | drop | dropped |
//! | 3.1.2.6 | quotbal | 400, or infer the quote | parsed, quote inferred (404) |
//! | 3.1.2.7 | ltgtruri | 400, or ignore the `<>` | parsed, `<>` ignored (404) |
//! | 3.1.2.8 | lwsruri | 400, or ignore the LWS | dropped: **deviation 3** |
//! | 3.1.2.9 | lwsstart | reject, or ignore the SPs | dropped: **deviation 3** |
//! | 3.1.2.10 | trws | reject, or ignore the SPs | parsed, SPs ignored (200) |
//! | 3.1.2.11 | escruri | 400, or ignore the escaped header | parsed, header ignored (404) |
//! | 3.1.2.12 | baddate | 400, or ignore the Date | parsed, Date ignored (404) |
//! | 3.1.2.13 | regbadct | 400, or infer the `<>` | parsed (405) |
//! | 3.1.2.14 | badaspec | 400, or ignore the spaces | parsed, spaces ignored (200) |
//! | 3.1.2.15 | baddn | 400, or infer the quotes (not forwarded) | parsed, quotes inferred (200) |
//! | 3.1.2.16 | badvers | 505 | refused 505 |
//! | 3.1.2.17 | mismatch01 | 400 | refused 400 |
//! | 3.1.2.18 | mismatch02 | 501 (or 400) | dropped: **deviation 2** |
//! | 3.1.2.19 | bigcode | drop | dropped |
//! | 3.2.1 | badbranch | parse; 400 or RFC 2543 matching | parsed (200) |
//! | 3.3.1 | insuf | don't break; ideally 400 | refused 400 |
//! | 3.3.2 | unkscm | parse; 416 | refused 416 |
//! | 3.3.3 | novelsc | parse; 416 | refused 416 |
//! | 3.3.4 | unksm2 | parse (a registrar answers 400) | parsed (405: not a registrar) |
//! | 3.3.5 | bext01 | parse; 420 with Unsupported | refused 420 with Unsupported |
//! | 3.3.6 | invut | parse; 415 | parsed; the INVITE gets 415 |
//! | 3.3.7 | regaut01 | parse (a registrar answers 401) | parsed (405) |
//! | 3.3.8 | multi01 | parse; 400 | refused 400 |
//! | 3.3.9 | mcl01 | error | refused 400 |
//! | 3.3.10 | bcast | parse; discard | parsed (no transaction: dropped) |
//! | 3.3.11 | zeromf | parse; a UAS processes it | parsed (200) |
//! | 3.3.12 | cparam01 | parse (a registrar accepts) | parsed (405) |
//! | 3.3.13 | cparam02 | parse (idem) | parsed (405) |
//! | 3.3.14 | regescrt | parse (idem) | parsed (405) |
//! | 3.3.15 | sdp01 | parse; 406 (or 400) | parsed; the INVITE gets 406 |
//! | 3.4.1 | inv2543 | accept (RFC 2543 syntax) | refused 400: **deviation 4** |
//! | - | test | (not an RFC message) | dropped |
//!
//! Deviations, all rsipstack 0.7.14's parser or transaction layer (none
//! crashes, none rings anyone):
//!
//! 1. wsinv: rsipstack reads no tag in `;   tag    = 1918181833n` (RFC
//!    3261's `EQUAL` allows whitespace around `=`), so To and From lose
//!    their tags. Its transaction layer keys a request on the From tag and
//!    would drop it unanswered; our check answers 400 "no tag" instead.
//! 2. intmeth, esc02, mismatch02: rsipstack's parser refuses every method
//!    it does not know, though any token is a valid extension method, so
//!    the message is dropped unanswered where the RFC wants it parsed (and
//!    answered 405/501, or 400 for mismatch02). We implement no extension
//!    method, so only the answer is missing.
//! 3. lwsruri, lwsstart: refused as the RFC allows, but by the parser, so
//!    unanswered rather than 400.
//! 4. inv2543: RFC 2543 syntax (no From tag, no branch, no Content-Length)
//!    should be accepted for backward compatibility; rsipstack cannot key a
//!    request without a From tag, we answer 400. Also, rsipstack reads a
//!    UDP body without Content-Length as empty (RFC 3261 §18.3: it runs to
//!    the end of the datagram), so such an INVITE would lose its SDP and
//!    look like a delayed offer; no check of ours can see it (the bytes
//!    are gone when the message reaches us).
//! 5. noreason: the empty reason phrase reads as the standard "Trying"
//!    (rsipstack keeps no empty phrase); reasons are only logged.
//!
//! rsipstack alone also deviated on these, which our check and reading now
//! handle as the RFC says: badinv01, clerr (body cut at the datagram's end
//! and taken), ncl and mcl01 (a guessed length), multi01 (the first of two
//! Call-ID/From/To taken), mismatch01 and badvers (processed), scalar02 and
//! insuf (dropped unanswered), unkscm and novelsc (OPTIONS answered 200),
//! bext01 (200 despite `Require`), sdp01 (would ring and answer SDP to a
//! caller that accepts none), semiuri (`user;par=…@example.com` read as
//! host `user`, no user: `sip:+15551234567;npdi@trunk` lost its number the
//! same way), esc01/escnull (users not unescaped: `%2B39…` was no number).
//! rsipstack still renders an escaped Request-URI user with `%` escaped
//! again (`sip:sips%253Auser…`, in `StartLine::Request::uri` only).

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use audin_protocol::EndReason;
use audin_protocol::{Untrusted, is_printable_text};
use audin_server::carrier::{BoxFuture, InboundCall, InboundRefusal, InboundSink};
use audin_server::sip::signalling::{
    ParsedSip, SipParseError, SipTransport, StartLine, parse_message, unescape_user,
};
use audin_server::sip::trunk::{
    SipEndpoint, SipEndpointConfig, SipTrunkConfig, caller_of, inbound_parties,
};
use tokio::net::UdpSocket;
use tokio::time::{Instant, timeout};

/// The address the messages come from in [`parse_message`].
const SOURCE: &str = "192.0.2.99:5099";

/// What the endpoint does with a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// Processed by the stack.
    Parsed,
    /// Answered with this status by our check, statelessly.
    Refused(u16),
    /// Nothing answered.
    Dropped,
}

use Verdict::{Dropped, Parsed, Refused};

/// Each file and what we do with it (the table above).
const CASES: &[(&str, &str, Verdict)] = &[
    ("3.1.1.1", "wsinv", Refused(400)),
    ("3.1.1.2", "intmeth", Dropped),
    ("3.1.1.3", "esc01", Parsed),
    ("3.1.1.4", "escnull", Parsed),
    ("3.1.1.5", "esc02", Dropped),
    ("3.1.1.6", "lwsdisp", Parsed),
    ("3.1.1.7", "longreq", Parsed),
    ("3.1.1.8", "dblreq", Parsed),
    ("3.1.1.9", "semiuri", Parsed),
    ("3.1.1.10", "transports", Parsed),
    ("3.1.1.11", "mpart01", Parsed),
    ("3.1.1.12", "unreason", Parsed),
    ("3.1.1.13", "noreason", Parsed),
    ("3.1.2.1", "badinv01", Refused(400)),
    ("3.1.2.2", "clerr", Refused(400)),
    ("3.1.2.3", "ncl", Refused(400)),
    ("3.1.2.4", "scalar02", Refused(400)),
    ("3.1.2.5", "scalarlg", Dropped),
    ("3.1.2.6", "quotbal", Parsed),
    ("3.1.2.7", "ltgtruri", Parsed),
    ("3.1.2.8", "lwsruri", Dropped),
    ("3.1.2.9", "lwsstart", Dropped),
    ("3.1.2.10", "trws", Parsed),
    ("3.1.2.11", "escruri", Parsed),
    ("3.1.2.12", "baddate", Parsed),
    ("3.1.2.13", "regbadct", Parsed),
    ("3.1.2.14", "badaspec", Parsed),
    ("3.1.2.15", "baddn", Parsed),
    ("3.1.2.16", "badvers", Refused(505)),
    ("3.1.2.17", "mismatch01", Refused(400)),
    ("3.1.2.18", "mismatch02", Dropped),
    ("3.1.2.19", "bigcode", Dropped),
    ("3.2.1", "badbranch", Parsed),
    ("3.3.1", "insuf", Refused(400)),
    ("3.3.2", "unkscm", Refused(416)),
    ("3.3.3", "novelsc", Refused(416)),
    ("3.3.4", "unksm2", Parsed),
    ("3.3.5", "bext01", Refused(420)),
    ("3.3.6", "invut", Parsed),
    ("3.3.7", "regaut01", Parsed),
    ("3.3.8", "multi01", Refused(400)),
    ("3.3.9", "mcl01", Refused(400)),
    ("3.3.10", "bcast", Parsed),
    ("3.3.11", "zeromf", Parsed),
    ("3.3.12", "cparam01", Parsed),
    ("3.3.13", "cparam02", Parsed),
    ("3.3.14", "regescrt", Parsed),
    ("3.3.15", "sdp01", Parsed),
    ("3.4.1", "inv2543", Refused(400)),
    ("-", "test", Dropped),
];

/// `../shared/sip/rfc4475` beside the clone.
fn torture_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/sip/rfc4475");
    assert!(
        dir.join("README.md").is_file(),
        "the RFC 4475 messages are not at {}: this test needs the `shared` folder \
         beside the clone (CI checks it out as ../shared)",
        dir.display()
    );
    dir
}

fn message(tag: &str) -> Vec<u8> {
    let path = torture_dir().join(format!("{tag}.dat"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn source() -> SocketAddr {
    SOURCE.parse().unwrap()
}

/// `parse_message`, with a panic reported as the file that caused it.
fn parse(tag: &str) -> Result<ParsedSip, SipParseError> {
    let data = message(tag);
    std::panic::catch_unwind(|| parse_message(&data, source()))
        .unwrap_or_else(|_| panic!("{tag}: parse_message panicked"))
}

fn verdict(tag: &str, result: &Result<ParsedSip, SipParseError>) -> Verdict {
    let is_response = message(tag).starts_with(b"SIP/");
    match result {
        Ok(_) => Parsed,
        Err(SipParseError::Unkeyed(why)) => {
            panic!("{tag}: passed our check but rsipstack cannot key it ({why})")
        }
        Err(e) => match e.status() {
            Some(status) if !is_response => Refused(status),
            _ => Dropped,
        },
    }
}

fn parsed(tag: &str) -> ParsedSip {
    parse(tag).unwrap_or_else(|e| panic!("{tag} refused: {e}"))
}

#[test]
fn every_torture_message_is_parsed_or_refused_as_the_table_says_without_a_panic() {
    let on_disk: BTreeSet<String> = std::fs::read_dir(torture_dir())
        .expect("reading the RFC 4475 folder")
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            name.strip_suffix(".dat").map(str::to_owned)
        })
        .collect();
    let listed: BTreeSet<String> = CASES.iter().map(|(_, t, _)| (*t).to_owned()).collect();
    assert_eq!(
        on_disk, listed,
        "every message has a verdict, and only those"
    );

    let mut wrong = Vec::new();
    for (section, tag, want) in CASES {
        let result = parse(tag);
        let got = verdict(tag, &result);
        if got != *want {
            wrong.push(format!(
                "{section} {tag}: want {want:?}, got {got:?} ({result:?})"
            ));
        }
        // Whatever we would log of it is printable once escaped.
        match &result {
            Err(e) => assert!(is_printable_text(&e.to_string()), "{tag}: {e}"),
            Ok(p) => {
                for field in [&p.call_id, &p.cseq_method]
                    .into_iter()
                    .chain(p.request_user.iter())
                    .chain(p.to_user.iter())
                    .chain(p.from_user.iter())
                {
                    let shown = Untrusted(&unescape_user(field)).to_string();
                    assert!(is_printable_text(&shown), "{tag}: {shown}");
                }
            }
        }
    }
    assert!(wrong.is_empty(), "verdicts changed:\n{}", wrong.join("\n"));
}

#[test]
fn valid_messages_yield_the_fields_the_rfc_describes() {
    let user = |u: &Option<String>| u.as_deref().map(unescape_user);

    // 3.1.1.3: escaped users are the users they escape.
    let esc01 = parsed("esc01");
    assert_eq!(
        user(&esc01.request_user).as_deref(),
        Some("sips:user@example.com")
    );
    assert_eq!(user(&esc01.to_user).as_deref(), Some("user"));
    assert_eq!(user(&esc01.from_user).as_deref(), Some("I have spaces"));
    assert_eq!(esc01.body.len(), 150);
    // Shown to an operator as it reads, not as it was escaped.
    assert_eq!(caller_of(esc01.from_user.as_deref()), "I have spaces");

    // 3.1.1.4: an escaped NUL is a NUL in the user, never in a log line or
    // on an operator's screen.
    let escnull = parsed("escnull");
    assert_eq!(user(&escnull.to_user).as_deref(), Some("null-\0-null"));
    assert_eq!(user(&escnull.from_user).as_deref(), Some("null-\0-null"));
    assert_eq!(caller_of(escnull.from_user.as_deref()), "null--null");
    assert_eq!(
        Untrusted("null-\0-null").to_string(),
        r#""null-\u{0}-null""#
    );

    // 3.1.1.6
    let lwsdisp = parsed("lwsdisp");
    assert_eq!(lwsdisp.from_user.as_deref(), Some("caller"));
    assert_eq!(lwsdisp.from_tag.as_deref(), Some("323"));
    assert_eq!(lwsdisp.call_id, "lwsdisp.1234abcd@funky.example.com");
    assert_eq!(
        (lwsdisp.cseq, lwsdisp.cseq_method.as_str()),
        (60, "OPTIONS")
    );

    // 3.1.1.7: long values survive whole.
    let longreq = parsed("longreq");
    assert_eq!(longreq.via_count, 34);
    assert_eq!(
        longreq.from_user.as_deref(),
        Some(&*"amazinglylongcallername".repeat(5))
    );
    assert!(longreq.call_id.starts_with("longreq.onereallyreally"));
    assert!(
        longreq.call_id.ends_with("longcallid"),
        "{}",
        longreq.call_id
    );
    let tag = longreq.from_tag.as_deref().unwrap();
    assert!(
        tag.len() > 150 && tag.starts_with("1298298") && tag.ends_with("2424"),
        "{tag}"
    );
    assert_eq!(
        (longreq.content_length, longreq.body.len()),
        (Some(150), 150)
    );

    // 3.1.1.8: the INVITE after the REGISTER's Content-Length is not read.
    let dblreq = parsed("dblreq");
    assert!(matches!(&dblreq.start, StartLine::Request { method, .. } if method == "REGISTER"));
    assert!(dblreq.body.is_empty());
    assert_eq!(dblreq.from_tag.as_deref(), Some("43251j3j324"));

    // 3.1.1.9: the user part keeps its parameters.
    let semiuri = parsed("semiuri");
    assert_eq!(
        semiuri.request_user.as_deref(),
        Some("user;par=u%40example.net")
    );

    // 3.1.1.10: five Via values in three headers.
    assert_eq!(parsed("transports").via_count, 5);

    // 3.1.1.11: a multipart body, binary parts included, byte for byte.
    let mpart = parsed("mpart01");
    let raw = message("mpart01");
    assert_eq!(mpart.body.len(), 553);
    assert!(raw.ends_with(&mpart.body));
    assert_eq!(
        mpart.content_type.as_deref(),
        Some("multipart/mixed;boundary=7a9cbec02ceef655")
    );

    // 3.1.1.12 / 3.1.1.13: responses.
    let unreason = parsed("unreason");
    assert_eq!(
        unreason.start,
        StartLine::Response {
            status: 200,
            reason: "= 2**3 * 5**2 но сто девяносто девять - простое".into()
        }
    );
    assert!(matches!(
        parsed("noreason").start,
        StartLine::Response { status: 100, .. }
    ));

    // Liberal readings the RFC allows (3.1.2.6, 3.1.2.7, 3.1.2.11, 3.1.2.14).
    assert_eq!(parsed("quotbal").to_user.as_deref(), Some("j.user"));
    assert_eq!(parsed("ltgtruri").request_user.as_deref(), Some("user"));
    assert_eq!(parsed("escruri").request_user.as_deref(), Some("user"));
    assert_eq!(parsed("badaspec").to_user.as_deref(), Some("t.watson"));
}

#[test]
fn invites_the_trunk_cannot_answer_get_the_status_the_rfc_names() {
    // 3.3.6: a body we cannot read.
    assert_eq!(
        parsed("invut").invite_info(SipTransport::Udp).unwrap_err(),
        415
    );
    // 3.3.15: a caller that accepts no SDP cannot take our 200.
    assert_eq!(
        parsed("sdp01").invite_info(SipTransport::Udp).unwrap_err(),
        406
    );
    // The others reach the call logic, which finds no number of ours in
    // them (404) but for the escaped one.
    let info = parsed("baddate").invite_info(SipTransport::Udp).unwrap();
    assert_eq!(info.source, source());
    assert!(info.sdp.is_some());
    assert_eq!(inbound_parties(&info), None);
}

#[test]
fn the_refusals_say_why_in_a_typed_error() {
    let err = |tag| parse(tag).unwrap_err();
    assert_eq!(err("insuf"), SipParseError::MissingHeader("From"));
    assert_eq!(err("multi01"), SipParseError::RepeatedHeader("From"));
    assert!(
        matches!(err("clerr"), SipParseError::ContentLength(ref w) if w == "9999 bytes declared, 154 came")
    );
    assert!(matches!(err("ncl"), SipParseError::ContentLength(_)));
    assert_eq!(
        err("mcl01"),
        SipParseError::ContentLength("repeated".into())
    );
    assert_eq!(
        err("mismatch01"),
        SipParseError::CSeqMismatch {
            method: "OPTIONS".into(),
            cseq: "INVITE".into()
        }
    );
    assert_eq!(err("badvers"), SipParseError::Version("SIP/7.0".into()));
    assert_eq!(
        err("bext01"),
        SipParseError::Extension("nothingSupportsThis, nothingSupportsThisEither".into())
    );
    assert!(matches!(
        err("badinv01"),
        SipParseError::BadHeader { header: "Via", .. }
    ));
    assert!(matches!(
        err("scalar02"),
        SipParseError::BadHeader { header: "CSeq", .. }
    ));
    assert!(matches!(err("intmeth"), SipParseError::Syntax(_)));
}

/// Found by the `sip_message` fuzz target: a response whose top Via
/// rsipstack cannot read passed our check, then its transaction layer
/// dropped it. Our check now says so itself (both drop it).
#[test]
fn a_response_whose_top_via_cannot_be_read_fails_our_check() {
    let response = "SIP/2.0 100 Trying\r\nVia: SIP/2.0anch=z9hG+4bK-ours;rport=5060\r\n\
         From: <sip:+390211111111@192.0.2.1>;tag=ours1\r\nTo: <sip:+390299999999@192.0.2.1>\r\n\
         Call-ID: ours-call@audin\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n";
    let err = parse_message(response.as_bytes(), source()).unwrap_err();
    assert!(matches!(err, SipParseError::NoVia(_)), "{err:?}");
}

/// Not RFC 4475, but the same reading: user parts real trunks send, which
/// rsipstack alone reads as no user at all (parameters in the user part)
/// or as no number (escapes).
#[test]
fn real_trunk_user_parts_reach_the_number_they_name() {
    for (uri, number) in [
        (
            "sip:+15551234567;npdi;rn=+15550000000@192.0.2.1;user=phone",
            "+15551234567",
        ),
        ("tel:+1-555-123-4567", "+15551234567"),
        ("sip:%2B390299999999@192.0.2.1", "+390299999999"),
        (
            "sip:390299999999@192.0.2.1:5060;transport=udp",
            "+390299999999",
        ),
    ] {
        let invite = format!(
            "INVITE {uri} SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK-real\r\n\
             From: <sip:+390211111111;npdi@192.0.2.1>;tag=1\r\nTo: <{uri}>\r\n\
             Call-ID: real@192.0.2.1\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\n\
             Content-Length: 0\r\n\r\n"
        );
        let info = parse_message(invite.as_bytes(), source())
            .unwrap_or_else(|e| panic!("{uri}: {e}"))
            .invite_info(SipTransport::Udp)
            .unwrap();
        assert_eq!(
            inbound_parties(&info),
            Some((number.to_owned(), "+390211111111".to_owned())),
            "{uri}"
        );
    }
}

// ---------------------------------------------------------------------------
// Over UDP, to a running endpoint

/// Counts calls delivered (there must be none) and refuses them.
#[derive(Default)]
struct CountingSink(AtomicUsize);

impl InboundSink for CountingSink {
    fn deliver(&self, call: InboundCall) -> BoxFuture<'_, Result<(), InboundRefusal>> {
        self.0.fetch_add(1, Ordering::SeqCst);
        call.leg.hang_up(EndReason::Rejected);
        Box::pin(async { Err(InboundRefusal::UnknownNumber) })
    }
}

/// The status code of a response datagram.
fn status_of(datagram: &[u8]) -> Option<u16> {
    let text = std::str::from_utf8(datagram).ok()?;
    text.strip_prefix("SIP/2.0 ")?.get(..3)?.parse().ok()
}

/// Waits for a response with `status` (others, e.g. a late one, are
/// skipped), returning it.
async fn expect_status(socket: &UdpSocket, status: u16, what: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut buf = vec![0u8; 65_535];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let (n, _) = timeout(left, socket.recv_from(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("{what}: no {status} within 5 s"))
            .expect("receiving");
        if status_of(&buf[..n]) == Some(status) {
            return String::from_utf8_lossy(&buf[..n]).into_owned();
        }
    }
}

#[tokio::test]
async fn the_endpoint_answers_or_ignores_every_torture_message_rings_nobody_and_stays_up() {
    // An address of its own on loopback: answers the stack sends by Via
    // (to port 5060 and the like) go nowhere anyone listens.
    let peer_ip = "127.0.0.77";
    let trunk = SipTrunkConfig::new("torture", &format!("sip:{peer_ip}:5060"))
        .unwrap()
        .allow("127.0.0.0/8")
        .unwrap();
    let sink = Arc::new(CountingSink::default());
    let endpoint = SipEndpoint::start(
        SipEndpointConfig::new("127.0.0.1:0".parse().unwrap()),
        vec![trunk],
        sink.clone(),
    )
    .await
    .expect("starting the endpoint");
    let to = endpoint.local_addr();
    let socket = UdpSocket::bind((peer_ip, 0)).await.unwrap();
    let local = socket.local_addr().unwrap();

    for (section, tag, verdict) in CASES {
        socket.send_to(&message(tag), to).await.unwrap();
        if let Refused(status) = verdict {
            // Our check answers the packet's source, whatever the Via says.
            let response = expect_status(&socket, *status, &format!("{section} {tag}")).await;
            assert!(
                response.contains("\r\nWarning: 399 audin \""),
                "{tag}: {response}"
            );
            if *tag == "bext01" {
                assert!(
                    response.contains(
                        "\r\nUnsupported: nothingSupportsThis, nothingSupportsThisEither\r\n"
                    ),
                    "{response}"
                );
            }
        }
    }

    // Still serving: a plain OPTIONS (answered where its Via says: here).
    let options = format!(
        "OPTIONS sip:{to} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK-after-torture;rport\r\n\
         From: <sip:probe@{local}>;tag=after\r\nTo: <sip:{to}>\r\nCall-ID: after-torture@{local}\r\n\
         CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    );
    socket.send_to(options.as_bytes(), to).await.unwrap();
    expect_status(&socket, 200, "OPTIONS after the torture messages").await;
    assert_eq!(
        sink.0.load(Ordering::SeqCst),
        0,
        "a torture message rang someone"
    );
    endpoint.shutdown().await;
}
