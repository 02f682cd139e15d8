//! Fuzz target `sdp_offer`: arbitrary bytes as a far end's SDP offer
//! through what the SIP trunk does with one (`trunk.rs`, inbound INVITE and
//! re-INVITE): `RemoteSdp::parse`, `negotiate`, then our answer from
//! `LocalSdp::answer`, once with an IPv4 and once with an IPv6 media
//! address.
//!
//! Invariants checked (any violation aborts the run):
//! - no panic;
//! - a refusal is a typed `SdpError` whose SIP status is 400 or 488 and
//!   whose text is printable (`is_printable_text`: it reaches the logs);
//! - `negotiate` picks PCMU or PCMA, on an RTP/AVP(F) audio line with a
//!   non-zero port, under the payload type the offer listed it with;
//! - our answer is CRLF lines of printable ASCII, no bigger than the offer
//!   plus [`ANSWER_OVERHEAD`] (every declined `m=` line repeats the
//!   offer's, never longer; our own audio line and session lines are
//!   fixed-size), and has exactly as many `m=` lines as the offer (RFC
//!   3264 §6);
//! - our answer re-parses with our own parser and negotiates to the same
//!   codec, payload type, telephone-event type and `m=` line, with the
//!   direction `Direction::answer` gives (the far end's `sendonly` answered
//!   `recvonly`…) and our media address;
//! - answering the same offer again gives the same bytes (the `o=` version
//!   only moves when the description changes, RFC 3264 §8).
//!
//! `AUDIN_FUZZ_TRACE=1` prints each verdict and answer.
#![no_main]

use std::net::{IpAddr, SocketAddr};

use audin_protocol::is_printable_text;
use audin_server::sip::sdp::{Direction, LocalSdp, MAX_SDP_BYTES, RemoteSdp};
use audin_server::sip::{Codec, PT_TELEPHONE_EVENT};
use libfuzzer_sys::fuzz_target;

/// Bytes our answer may add to the offer's size: the session lines
/// (`v=`, `o=` with a 20-digit id and version and an IPv6 address, `s=`,
/// `c=`, `t=`: under 150) and our audio line with its attributes (under
/// 200), which replaces an offer line that may be much shorter.
const ANSWER_OVERHEAD: usize = 512;
/// Our RTP port in the answer.
const PORT: u16 = 40_000;

fn tracing() -> bool {
    std::env::var_os("AUDIN_FUZZ_TRACE").is_some()
}

fn short(data: &[u8]) -> String {
    let text = String::from_utf8_lossy(data);
    let head: String = text.chars().take(400).collect();
    format!(
        "{head:?}{}",
        if text.chars().count() > 400 {
            "…"
        } else {
            ""
        }
    )
}

fuzz_target!(|data: &[u8]| {
    let remote = match RemoteSdp::parse(data) {
        Ok(r) => r,
        Err(e) => {
            check_refusal(data, &e);
            return;
        }
    };
    let negotiated = match remote.negotiate() {
        Ok(n) => n,
        Err(e) => {
            check_refusal(data, &e);
            return;
        }
    };
    assert_eq!(
        remote.negotiate().as_ref(),
        Ok(&negotiated),
        "negotiate is not deterministic"
    );
    let (index, audio) = remote
        .audio_streams()
        .find(|(i, _)| *i == negotiated.media_index)
        .expect("the negotiated line is an audio stream");
    assert_eq!(index, negotiated.media_index);
    assert!(audio.port != 0);
    let proto = audio.proto.to_ascii_uppercase();
    assert!(proto == "RTP/AVP" || proto == "RTP/AVPF", "{proto}");
    let format = audio
        .formats
        .iter()
        .find(|f| f.payload_type == negotiated.payload_type)
        .expect("the payload type is one the offer listed");
    assert_eq!(format.codec(), Some(negotiated.codec));
    assert!(matches!(negotiated.codec, Codec::Pcmu | Codec::Pcma));

    for address in [
        IpAddr::from([192, 0, 2, 10]),
        "2001:db8::10".parse::<IpAddr>().unwrap(),
    ] {
        let mut local = LocalSdp::new(0x0123_4567_89ab_cdef, address, PORT);
        let answer = local.answer(&remote, &negotiated, Direction::SendRecv);
        if tracing() {
            eprintln!("{negotiated:?}\n{}", String::from_utf8_lossy(&answer));
        }
        let context = || format!("\n offer: {}\n answer: {}", short(data), short(&answer));
        assert!(
            answer.len() <= data.len() + ANSWER_OVERHEAD,
            "answer of {} bytes to an offer of {}{}",
            answer.len(),
            data.len(),
            context()
        );
        assert!(answer.len() <= MAX_SDP_BYTES + ANSWER_OVERHEAD);
        let text = std::str::from_utf8(&answer).expect("our answer is UTF-8");
        assert!(text.ends_with("\r\n"), "{}", context());
        for line in text.split_terminator("\r\n") {
            assert!(
                !line.is_empty() && line.bytes().all(|b| (0x20..0x7f).contains(&b)),
                "line {line:?}{}",
                context()
            );
        }

        let back = RemoteSdp::parse(&answer)
            .unwrap_or_else(|e| panic!("our answer does not parse: {e}{}", context()));
        assert_eq!(
            back.media_count(),
            remote.media_count(),
            "m= lines{}",
            context()
        );
        let again = back
            .negotiate()
            .unwrap_or_else(|e| panic!("our answer does not negotiate: {e}{}", context()));
        assert_eq!(again.codec, negotiated.codec, "codec{}", context());
        assert_eq!(
            again.payload_type,
            negotiated.payload_type,
            "payload type{}",
            context()
        );
        assert_eq!(
            again.telephone_event,
            negotiated.telephone_event,
            "telephone-event{}",
            context()
        );
        assert_eq!(
            again.media_index,
            negotiated.media_index,
            "m= line{}",
            context()
        );
        assert_eq!(
            again.remote_direction,
            Direction::SendRecv.answer(negotiated.remote_direction),
            "direction{}",
            context()
        );
        assert_eq!(
            again.remote_rtp,
            Some(SocketAddr::new(address, PORT)),
            "{}",
            context()
        );
        assert_eq!(again.comfort_noise, None, "we never list CN{}", context());

        // A refresh: the same description, the same version.
        let repeated = local.answer(&remote, &negotiated, Direction::SendRecv);
        assert_eq!(repeated, answer, "a repeated answer changed{}", context());
    }

    // Our own offer negotiates against itself (cheap, and a fixed point).
    let mut local = LocalSdp::new(1, IpAddr::from([192, 0, 2, 10]), PORT);
    let offer = RemoteSdp::parse(&local.offer(Direction::SendRecv)).expect("our offer parses");
    let n = offer.negotiate().expect("our offer negotiates");
    assert_eq!(
        (n.codec, n.telephone_event),
        (Codec::Pcmu, Some(PT_TELEPHONE_EVENT))
    );
});

fn check_refusal(data: &[u8], e: &audin_server::sip::sdp::SdpError) {
    let status = e.sip_status();
    assert!(status == 400 || status == 488, "{e:?} → {status}");
    let shown = e.to_string();
    assert!(
        is_printable_text(&shown),
        "error text {shown:?}\n offer: {}",
        short(data)
    );
    if tracing() {
        eprintln!("refused {status}: {shown}");
    }
}
