//! SDP offer/answer (RFC 3264 subset) for one G.711 audio stream.
//!
//! What a SIP trunk needs and nothing more: read the far end's offer or
//! answer ([`RemoteSdp::parse`]), pick PCMU or PCMA in the far end's order of
//! preference plus telephone-event if it is there ([`RemoteSdp::negotiate`]),
//! and write our own answer or offer ([`LocalSdp`]). Hold is understood both
//! ways it is signalled (`a=sendonly`/`a=inactive`, and the RFC 2543
//! `c=0.0.0.0`), and our answer mirrors it (`sendonly` → `recvonly`): a hold
//! answered `sendrecv` makes some carriers hang up.
//!
//! Parsing and writing go through `sdp-types`; our types keep it out of the
//! public API. This module does no I/O and reads no clock: it turns bytes
//! into decisions and decisions into bytes.
//!
//! Every malformed or unacceptable description is a typed [`SdpError`]
//! (never a panic); [`SdpError::sip_status`] says which SIP response the
//! caller should send (400 or 488). Text taken from the far end's SDP is
//! quoted with [`audin_protocol::Untrusted`] whenever it is displayed.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use audin_protocol::Untrusted;
use sdp_types as sdpt;

use super::{CLOCK_RATE, Codec, FRAME_MS, PT_TELEPHONE_EVENT};

/// Largest SDP body we parse. Real trunk offers are under 1 KiB; WebRTC
/// gateways with ICE candidates reach a few KiB. Anything bigger is an
/// attack or a bug, and parsing it costs memory for nothing.
pub const MAX_SDP_BYTES: usize = 16 * 1024;

/// Most `m=` lines we accept in one description (a phone call has one or
/// two; the answer must repeat every one of them, so this bounds our answer
/// too).
pub const MAX_MEDIA_LINES: usize = 16;

/// The packetisation we send and assume when the far end states none
/// (RFC 3551 §4.5: G.711 defaults to 20 ms).
pub const DEFAULT_PTIME_MS: u32 = FRAME_MS;

/// The telephone-events we can receive and send: 0-9, *, #, A-D (RFC 4733).
const TELEPHONE_EVENTS: &str = "0-15";

/// Who sends media on a stream (RFC 3264 §5.1), from the point of view of
/// the side whose description it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub enum Direction {
    /// Both ways (the default when nothing is said).
    #[default]
    SendRecv,
    /// This side sends only: it holds the other side.
    SendOnly,
    /// This side receives only.
    RecvOnly,
    /// No media either way.
    Inactive,
}

impl Direction {
    /// The direction with these two capabilities.
    pub const fn from_flags(sends: bool, receives: bool) -> Self {
        match (sends, receives) {
            (true, true) => Direction::SendRecv,
            (true, false) => Direction::SendOnly,
            (false, true) => Direction::RecvOnly,
            (false, false) => Direction::Inactive,
        }
    }

    /// Whether this side sends media.
    pub const fn sends(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::SendOnly)
    }

    /// Whether this side receives media.
    pub const fn receives(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::RecvOnly)
    }

    /// The same stream seen from the other side (`sendonly` ↔ `recvonly`).
    pub const fn mirror(self) -> Self {
        Direction::from_flags(self.receives(), self.sends())
    }

    /// Our answer's direction when we `self` would like and the offer says
    /// `remote` (RFC 3264 §6.1): we send only if we want to and they
    /// receive, we receive only if we want to and they send. A `sendonly`
    /// hold offer is therefore answered `recvonly`, `inactive` with
    /// `inactive`.
    pub const fn answer(self, remote: Direction) -> Self {
        Direction::from_flags(
            self.sends() && remote.receives(),
            self.receives() && remote.sends(),
        )
    }

    /// The SDP attribute name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Direction::SendRecv => "sendrecv",
            Direction::SendOnly => "sendonly",
            Direction::RecvOnly => "recvonly",
            Direction::Inactive => "inactive",
        }
    }

    fn from_attribute(name: &str) -> Option<Self> {
        [
            Direction::SendRecv,
            Direction::SendOnly,
            Direction::RecvOnly,
            Direction::Inactive,
        ]
        .into_iter()
        .find(|d| d.as_str().eq_ignore_ascii_case(name))
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a session description cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SdpError {
    /// The body is larger than [`MAX_SDP_BYTES`].
    TooLarge {
        /// Its length in bytes.
        len: usize,
    },
    /// Not a session description (the parser's reason, already escaped).
    Malformed {
        /// What is wrong, with the line number.
        reason: String,
    },
    /// More than [`MAX_MEDIA_LINES`] `m=` lines.
    TooManyMedia {
        /// How many there were.
        count: usize,
    },
    /// No audio stream with a non-zero port.
    NoAudio,
    /// The only audio streams use a transport we do not speak (SRTP, TCP).
    UnsupportedTransport {
        /// The first such transport, as written.
        proto: String,
    },
    /// A payload format on an RTP `m=` line that is not a number 0-127.
    InvalidFormat {
        /// The format as written.
        format: String,
    },
    /// An audio stream with a port but no `c=` line at either level.
    MissingConnection,
    /// A `c=` address that is not an IP address (we do not resolve names).
    InvalidConnection {
        /// The address as written.
        address: String,
    },
    /// Audio is offered, but neither PCMU nor PCMA: the caller answers 488.
    NoCommonCodec {
        /// The encoding names offered, in order (for the log).
        offered: Vec<String>,
    },
}

impl SdpError {
    /// The SIP final response for an offer that failed this way: 400 when
    /// the body cannot be read, 488 (Not Acceptable Here) when it can but
    /// asks for something we do not do.
    pub const fn sip_status(&self) -> u16 {
        match self {
            SdpError::TooLarge { .. }
            | SdpError::Malformed { .. }
            | SdpError::TooManyMedia { .. }
            | SdpError::InvalidFormat { .. }
            | SdpError::MissingConnection
            | SdpError::InvalidConnection { .. } => 400,
            SdpError::NoAudio
            | SdpError::UnsupportedTransport { .. }
            | SdpError::NoCommonCodec { .. } => 488,
        }
    }
}

impl fmt::Display for SdpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SdpError::TooLarge { len } => {
                write!(f, "SDP body of {len} bytes exceeds {MAX_SDP_BYTES}")
            }
            SdpError::Malformed { reason } => write!(f, "malformed SDP: {reason}"),
            SdpError::TooManyMedia { count } => {
                write!(f, "SDP has {count} media lines, at most {MAX_MEDIA_LINES}")
            }
            SdpError::NoAudio => f.write_str("SDP has no active audio stream"),
            SdpError::UnsupportedTransport { proto } => {
                write!(f, "unsupported audio transport {}", Untrusted(proto))
            }
            SdpError::InvalidFormat { format } => {
                write!(f, "invalid RTP payload format {}", Untrusted(format))
            }
            SdpError::MissingConnection => f.write_str("audio stream without a c= address"),
            SdpError::InvalidConnection { address } => {
                write!(f, "c= address {} is not an IP address", Untrusted(address))
            }
            SdpError::NoCommonCodec { offered } => {
                f.write_str("no common codec (we need PCMU or PCMA), offered:")?;
                for name in offered.iter().take(16) {
                    write!(f, " {}", Untrusted(name))?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for SdpError {}

/// One payload format of an audio stream, resolved through `a=rtpmap` or
/// the static table of RFC 3551.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Format {
    /// The RTP payload type.
    pub payload_type: u8,
    /// The encoding name as written (`PCMU`, `opus`, `telephone-event`…),
    /// empty for a dynamic type without `a=rtpmap`.
    pub encoding: String,
    /// The RTP clock rate (0 when unknown).
    pub clock_rate: u32,
    /// Channels (1 unless stated).
    pub channels: u32,
}

impl Format {
    fn is(&self, name: &str, rate: u32) -> bool {
        self.encoding.eq_ignore_ascii_case(name) && self.clock_rate == rate && self.channels == 1
    }

    /// One of our codecs, if this format is PCMU or PCMA at 8 kHz mono.
    pub fn codec(&self) -> Option<Codec> {
        [Codec::Pcmu, Codec::Pcma]
            .into_iter()
            .find(|c| self.is(c.encoding_name(), CLOCK_RATE))
    }

    /// Whether this is telephone-event at 8 kHz (the rate of our audio).
    pub fn is_telephone_event(&self) -> bool {
        self.is("telephone-event", CLOCK_RATE)
    }

    /// Whether this is comfort noise at 8 kHz (RFC 3389).
    pub fn is_comfort_noise(&self) -> bool {
        self.is("CN", CLOCK_RATE)
    }
}

/// An RTP audio stream of a remote description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudioMedia {
    /// The transport as written (`RTP/AVP`, `RTP/AVPF`, `RTP/SAVP`…).
    pub proto: String,
    /// The formats in the order of the `m=` line (= preference).
    pub formats: Vec<Format>,
    /// The stated direction (media level, else session level, else
    /// `sendrecv`), before `c=0.0.0.0` is taken into account.
    pub direction: Direction,
    /// The connection address (media level, else session level).
    pub address: IpAddr,
    /// The RTP port.
    pub port: u16,
    /// `a=ptime` in ms, when stated and valid.
    pub ptime_ms: Option<u32>,
    /// `a=maxptime` in ms, when stated and valid.
    pub maxptime_ms: Option<u32>,
    /// The RTCP address from `a=rtcp` (RFC 3605), when stated.
    pub rtcp: Option<SocketAddr>,
}

impl AudioMedia {
    fn secure_or_not_udp(&self) -> bool {
        let proto = self.proto.to_ascii_uppercase();
        !(proto == "RTP/AVP" || proto == "RTP/AVPF")
    }
}

/// One `m=` line, kept so that the answer can repeat every one of them
/// (RFC 3264 §6: the answer has as many `m=` lines, in the same order; the
/// ones we decline get port 0).
#[derive(Debug, Clone, PartialEq, Eq)]
struct MediaLine {
    media: String,
    proto: String,
    fmt: String,
    /// `Some` for an RTP audio stream with a non-zero port.
    audio: Option<AudioMedia>,
}

/// A parsed remote session description (an offer or an answer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteSdp {
    /// `o=` session id.
    pub session_id: String,
    /// `o=` session version: an unchanged version in a re-INVITE means an
    /// unchanged session (a session refresh), RFC 3264 §8.
    pub session_version: u64,
    media: Vec<MediaLine>,
}

/// What was agreed for the audio stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    /// Index of the audio `m=` line in the remote description.
    pub media_index: usize,
    /// The codec.
    pub codec: Codec,
    /// The payload type the far end listed it under (normally the static
    /// 0 or 8): we send with it.
    pub payload_type: u8,
    /// The far end's telephone-event payload type, if it offered one.
    pub telephone_event: Option<u8>,
    /// The far end's comfort-noise payload type (normally 13), if listed.
    /// We never list CN ourselves (we send continuous audio), but accept
    /// it from trunks that send it anyway.
    pub comfort_noise: Option<u8>,
    /// The far end's direction with `c=0.0.0.0` folded in (an RFC 2543
    /// hold: it does not want to receive).
    pub remote_direction: Direction,
    /// The far end's RTP address; `None` for an RFC 2543 hold
    /// (`c=0.0.0.0`). Whether to send there at all also depends on the
    /// direction: use [`Negotiated::send_to`].
    pub remote_rtp: Option<SocketAddr>,
    /// The packetisation the far end asked for (ms); we send 20 ms
    /// regardless, which every G.711 receiver accepts.
    pub ptime_ms: u32,
}

impl Negotiated {
    /// Where our RTP goes, if anywhere: only when the far end receives.
    pub fn send_to(&self) -> Option<SocketAddr> {
        self.remote_rtp.filter(|_| self.remote_direction.receives())
    }

    /// Whether the far end put the call on hold (it stops sending, or asks
    /// us to stop).
    pub fn is_remote_hold(&self) -> bool {
        self.remote_direction != Direction::SendRecv
    }
}

fn write_session(session: &sdpt::Session) -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    session
        .write(&mut out)
        .expect("writing to a Vec<u8> cannot fail");
    out
}

fn malformed(e: impl fmt::Display) -> SdpError {
    // The parser's message can quote the input: escape it before it can
    // reach a log line.
    SdpError::Malformed {
        reason: audin_protocol::escape_unsafe(&e.to_string()),
    }
}

/// RFC 8866 token characters, plus `/` for the transport (`RTP/AVP`).
fn is_token(s: &str, allow_slash: bool) -> bool {
    !s.is_empty()
        && s.bytes().all(|b| {
            matches!(b, b'!' | b'#'..=b'\'' | b'*' | b'+' | b'-' | b'.' | b'0'..=b'9'
                | b'A'..=b'Z' | b'^'..=b'~')
                || (allow_slash && b == b'/')
        })
}

/// The format of a static payload type (RFC 3551 table 4, the audio ones a
/// trunk might send without `a=rtpmap`).
fn static_format(pt: u8) -> Option<(&'static str, u32)> {
    Some(match pt {
        0 => ("PCMU", 8_000),
        3 => ("GSM", 8_000),
        4 => ("G723", 8_000),
        8 => ("PCMA", 8_000),
        9 => ("G722", 8_000),
        13 => ("CN", 8_000),
        18 => ("G729", 8_000),
        _ => return None,
    })
}

fn first_attribute<'a>(
    media: &'a sdpt::Media,
    session: &'a sdpt::Session,
    name: &'a str,
) -> Option<Option<&'a str>> {
    media
        .get_first_attribute_value(name)
        .or_else(|| session.get_first_attribute_value(name))
}

fn direction_of(attributes: &[sdpt::Attribute]) -> Option<Direction> {
    attributes
        .iter()
        .find_map(|a| Direction::from_attribute(&a.attribute))
}

fn parse_ms(value: Option<Option<&str>>) -> Option<u32> {
    // Liberal: a bad ptime is ignored, not fatal (we send 20 ms anyway).
    let ms: u32 = value??.trim().parse().ok()?;
    (1..=1000).contains(&ms).then_some(ms)
}

fn parse_audio(
    session: &sdpt::Session,
    m: &sdpt::Media,
    fmts: &[u8],
) -> Result<AudioMedia, SdpError> {
    let connection = m
        .connections
        .first()
        .or(session.connection.as_ref())
        .ok_or(SdpError::MissingConnection)?;
    let address = connection
        .try_address()
        .map_err(|_| SdpError::InvalidConnection {
            address: connection.connection_address.clone(),
        })?
        .ip;

    // a=rtpmap for this stream's formats; a malformed rtpmap (of a codec we
    // would not use anyway) is skipped rather than failing the call.
    let rtpmaps: Vec<sdpt::RtpMap> = m
        .attributes_typed::<sdpt::RtpMap>()
        .filter_map(Result::ok)
        .collect();
    let formats = fmts
        .iter()
        .map(|&pt| {
            let mapped = rtpmaps.iter().find(|r| r.payload_type == pt);
            match (mapped, static_format(pt)) {
                (Some(r), _) => Format {
                    payload_type: pt,
                    encoding: r.encoding_name.clone(),
                    clock_rate: r.clock_rate,
                    channels: r
                        .encoding_params
                        .as_deref()
                        .and_then(|c| c.trim().parse().ok())
                        .unwrap_or(1),
                },
                (None, Some((name, rate))) => Format {
                    payload_type: pt,
                    encoding: name.to_owned(),
                    clock_rate: rate,
                    channels: 1,
                },
                (None, None) => Format {
                    payload_type: pt,
                    encoding: String::new(),
                    clock_rate: 0,
                    channels: 1,
                },
            }
        })
        .collect();

    let direction = direction_of(&m.attributes)
        .or_else(|| direction_of(&session.attributes))
        .unwrap_or_default();

    let rtcp = m
        .get_first_attribute_typed::<sdpt::Rtcp>()
        .and_then(Result::ok)
        .map(|r| {
            let ip = r
                .connection_address
                .as_deref()
                .and_then(|a| a.parse::<IpAddr>().ok())
                .unwrap_or(address);
            SocketAddr::new(ip, r.port)
        });

    Ok(AudioMedia {
        proto: m.proto.clone(),
        formats,
        direction,
        address,
        port: m.port,
        ptime_ms: parse_ms(first_attribute(m, session, "ptime")),
        maxptime_ms: parse_ms(first_attribute(m, session, "maxptime")),
        rtcp,
    })
}

impl RemoteSdp {
    /// Parses a far end's session description (the body of an INVITE, a
    /// 183, a 200 or an ACK).
    pub fn parse(body: &[u8]) -> Result<RemoteSdp, SdpError> {
        if body.len() > MAX_SDP_BYTES {
            return Err(SdpError::TooLarge { len: body.len() });
        }
        let session = sdpt::Session::parse(body).map_err(malformed)?;
        if session.medias.len() > MAX_MEDIA_LINES {
            return Err(SdpError::TooManyMedia {
                count: session.medias.len(),
            });
        }
        let mut media = Vec::with_capacity(session.medias.len());
        for m in &session.medias {
            // These three are echoed into our answer's rejected lines, so
            // they must be plain tokens.
            if !is_token(&m.media, false) || !is_token(&m.proto, true) {
                return Err(SdpError::Malformed {
                    reason: format!("m= line {} {}", Untrusted(&m.media), Untrusted(&m.proto)),
                });
            }
            let fmt_tokens: Vec<&str> = m.fmt.split_ascii_whitespace().collect();
            if fmt_tokens.is_empty() || !fmt_tokens.iter().all(|t| is_token(t, true)) {
                return Err(SdpError::InvalidFormat {
                    format: m.fmt.clone(),
                });
            }
            let is_rtp = m.proto.to_ascii_uppercase().contains("RTP/");
            let audio = if m.media.eq_ignore_ascii_case("audio") && is_rtp && m.port != 0 {
                let mut pts = Vec::with_capacity(fmt_tokens.len());
                for token in &fmt_tokens {
                    match token.parse::<u8>() {
                        Ok(pt) if pt <= 127 => pts.push(pt),
                        _ => {
                            return Err(SdpError::InvalidFormat {
                                format: (*token).to_owned(),
                            });
                        }
                    }
                }
                Some(parse_audio(&session, m, &pts)?)
            } else {
                None
            };
            media.push(MediaLine {
                media: m.media.clone(),
                proto: m.proto.clone(),
                fmt: fmt_tokens.join(" "),
                audio,
            });
        }
        Ok(RemoteSdp {
            session_id: session.origin.sess_id.clone(),
            session_version: session.origin.sess_version,
            media,
        })
    }

    /// The active RTP audio streams, with their `m=` line index.
    pub fn audio_streams(&self) -> impl Iterator<Item = (usize, &AudioMedia)> {
        self.media
            .iter()
            .enumerate()
            .filter_map(|(i, m)| m.audio.as_ref().map(|a| (i, a)))
    }

    /// Number of `m=` lines.
    pub fn media_count(&self) -> usize {
        self.media.len()
    }

    /// Picks the first audio stream we can use and, in it, the first of
    /// PCMU/PCMA in the far end's order, plus telephone-event at 8 kHz if
    /// listed. Works the same on an offer (we choose) and on an answer to
    /// our offer (the far end chose; its first format we know wins).
    pub fn negotiate(&self) -> Result<Negotiated, SdpError> {
        let mut first_error = None;
        for (index, audio) in self.audio_streams() {
            if audio.secure_or_not_udp() {
                first_error.get_or_insert(SdpError::UnsupportedTransport {
                    proto: audio.proto.clone(),
                });
                continue;
            }
            let Some((format, codec)) =
                audio.formats.iter().find_map(|f| f.codec().map(|c| (f, c)))
            else {
                // A codec mismatch says more than a transport one.
                if !matches!(first_error, Some(SdpError::NoCommonCodec { .. })) {
                    first_error = Some(SdpError::NoCommonCodec {
                        offered: audio
                            .formats
                            .iter()
                            .map(|f| {
                                if f.encoding.is_empty() {
                                    f.payload_type.to_string()
                                } else {
                                    f.encoding.clone()
                                }
                            })
                            .collect(),
                    });
                }
                continue;
            };
            let telephone_event = audio
                .formats
                .iter()
                .find(|f| f.is_telephone_event())
                .map(|f| f.payload_type);
            let comfort_noise = audio
                .formats
                .iter()
                .find(|f| f.is_comfort_noise())
                .map(|f| f.payload_type);
            // RFC 3264 §8.4 / RFC 2543: c=0.0.0.0 means "do not send to me".
            let hold_address = audio.address.is_unspecified();
            let remote_direction = if hold_address {
                Direction::from_flags(audio.direction.sends(), false)
            } else {
                audio.direction
            };
            let remote_rtp = (!hold_address).then(|| SocketAddr::new(audio.address, audio.port));
            return Ok(Negotiated {
                media_index: index,
                codec,
                payload_type: format.payload_type,
                telephone_event,
                comfort_noise,
                remote_direction,
                remote_rtp,
                ptime_ms: audio.ptime_ms.unwrap_or(DEFAULT_PTIME_MS),
            });
        }
        Err(first_error.unwrap_or(SdpError::NoAudio))
    }
}

/// Our side of the session: the address we receive RTP on and the `o=`
/// line's id and version, which RFC 3264 §8 wants stable for the whole
/// dialog and incremented on every change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalSdp {
    session_id: u64,
    version: u64,
    address: IpAddr,
    port: u16,
    /// The last body we produced, without its `o=` line, to tell a changed
    /// description (new version) from a repeated one (same version).
    last_body: Option<Vec<u8>>,
}

impl LocalSdp {
    /// A session receiving RTP on `address:port`. `session_id` should be
    /// random and unique per dialog (the caller draws it: no randomness or
    /// clock here). Versions start at 1.
    pub fn new(session_id: u64, address: IpAddr, port: u16) -> Self {
        LocalSdp {
            session_id,
            version: 1,
            address,
            port,
            last_body: None,
        }
    }

    /// Moves our media to another address or port (the next description
    /// gets a new version).
    pub fn set_media_address(&mut self, address: IpAddr, port: u16) {
        self.address = address;
        self.port = port;
    }

    /// The `o=` version the last description carried (or the next one will,
    /// if none was produced yet).
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The `o=` session id.
    pub fn session_id(&self) -> u64 {
        self.session_id
    }

    /// Our offer: PCMU, PCMA, telephone-event/101, ptime 20, in `direction`
    /// (`SendRecv`, or `SendOnly` to put the far end on hold). A re-offer
    /// that changes anything gets the next version; an identical one (a
    /// session refresh) keeps it.
    pub fn offer(&mut self, direction: Direction) -> Vec<u8> {
        let mut media = self.audio_media(
            &[
                Codec::Pcmu.static_payload_type(),
                Codec::Pcma.static_payload_type(),
            ],
            Some(PT_TELEPHONE_EVENT),
        );
        media.add_attribute(sdpt::Attribute::with_value(
            "rtpmap",
            sdpt::RtpMap::new(Codec::Pcmu.static_payload_type(), "PCMU", CLOCK_RATE),
        ));
        media.add_attribute(sdpt::Attribute::with_value(
            "rtpmap",
            sdpt::RtpMap::new(Codec::Pcma.static_payload_type(), "PCMA", CLOCK_RATE),
        ));
        Self::add_telephone_event(&mut media, PT_TELEPHONE_EVENT);
        Self::add_tail(&mut media, direction);
        self.finish(vec![media])
    }

    /// Our answer to `remote` after [`RemoteSdp::negotiate`] gave
    /// `negotiated`: the chosen codec and telephone-event under the far
    /// end's payload types, the direction from [`Direction::answer`] with
    /// what we want (`local`), and every other `m=` line declined with port
    /// 0 (RFC 3264 §6).
    pub fn answer(
        &mut self,
        remote: &RemoteSdp,
        negotiated: &Negotiated,
        local: Direction,
    ) -> Vec<u8> {
        let direction = local.answer(negotiated.remote_direction);
        let mut medias = Vec::with_capacity(remote.media.len());
        for (i, line) in remote.media.iter().enumerate() {
            if i != negotiated.media_index {
                let mut declined = sdpt::Media::new(
                    sdpt::MediaType::Audio,
                    0,
                    sdpt::TransportProto::RtpAvp,
                    &line.fmt,
                );
                declined.media = line.media.clone();
                declined.proto = line.proto.clone();
                medias.push(declined);
                continue;
            }
            let mut media =
                self.audio_media(&[negotiated.payload_type], negotiated.telephone_event);
            media.proto = line.proto.clone();
            media.add_attribute(sdpt::Attribute::with_value(
                "rtpmap",
                sdpt::RtpMap::new(
                    negotiated.payload_type,
                    negotiated.codec.encoding_name(),
                    CLOCK_RATE,
                ),
            ));
            if let Some(pt) = negotiated.telephone_event {
                Self::add_telephone_event(&mut media, pt);
            }
            Self::add_tail(&mut media, direction);
            medias.push(media);
        }
        self.finish(medias)
    }

    fn audio_media(&self, codecs: &[u8], event: Option<u8>) -> sdpt::Media {
        let fmt: Vec<String> = codecs
            .iter()
            .chain(event.iter())
            .map(u8::to_string)
            .collect();
        sdpt::Media::new(
            sdpt::MediaType::Audio,
            self.port,
            sdpt::TransportProto::RtpAvp,
            fmt.join(" "),
        )
    }

    fn add_telephone_event(media: &mut sdpt::Media, pt: u8) {
        media.add_attribute(sdpt::Attribute::with_value(
            "rtpmap",
            sdpt::RtpMap::new(pt, "telephone-event", CLOCK_RATE),
        ));
        media.add_attribute_with_value("fmtp", format!("{pt} {TELEPHONE_EVENTS}"));
    }

    fn add_tail(media: &mut sdpt::Media, direction: Direction) {
        media.add_attribute_with_value("ptime", FRAME_MS);
        media.add_attribute_from_str(direction.as_str());
    }

    fn finish(&mut self, medias: Vec<sdpt::Media>) -> Vec<u8> {
        let mut session = sdpt::Session::new(
            sdpt::Origin::with_ip_addr(self.session_id, 0, self.address),
            "audin",
        );
        session.origin.set_username("audin");
        session.set_connection(self.address);
        session.add_time(sdpt::Time::new(0, 0));
        session.add_medias(medias);
        // Compare without the o= line (which holds the version itself).
        let body = write_session(&session);
        if self.last_body.as_ref().is_some_and(|last| *last != body) {
            self.version += 1;
        }
        self.last_body = Some(body);
        session.origin.sess_version = self.version;
        write_session(&session)
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    /// SIPp 3.6.1 `-sn uac`, captured on loopback.
    const SIPP_UAC: &str = "v=0\r\no=user1 53655765 2353687637 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";

    /// SIPp 3.6.1 `-sn uac_pcap` (PCMA + RFC 2833), captured on loopback.
    const SIPP_UAC_PCAP: &str = "v=0\r\no=user1 53655765 2353687637 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 6000 RTP/AVP 8 101\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-11,16\r\n";

    /// baresip 1.0.0 dialing out (`audio_codecs=pcmu,pcma`), captured on
    /// loopback; its host address rewritten to a documentation one.
    const BARESIP: &str = "v=0\r\no=- 2149997922 1057109259 IN IP4 192.0.2.2\r\ns=-\r\nc=IN IP4 192.0.2.2\r\nt=0 0\r\na=tool:baresip 1.0.0\r\nm=audio 10134 RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\na=sendrecv\r\na=label:1\r\na=rtcp-rsize\r\na=ssrc:3031099524 cname:sip:alice@127.0.0.1:5097\r\na=minptime:20\r\na=ptime:20\r\n";

    /// A Twilio-style offer: wideband codecs first, rtcp, ptime/maxptime.
    const TWILIO_STYLE: &str = "v=0\r\no=root 1190186911 1190186911 IN IP4 198.51.100.7\r\ns=Twilio Media Gateway\r\nc=IN IP4 198.51.100.7\r\nt=0 0\r\nm=audio 16932 RTP/AVP 111 9 0 8 101\r\na=rtpmap:111 opus/48000/2\r\na=fmtp:111 minptime=10;useinbandfec=1\r\na=rtpmap:9 G722/8000\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=rtcp:16933 IN IP4 198.51.100.7\r\na=ptime:20\r\na=maxptime:150\r\na=sendrecv\r\n";

    /// A Telnyx-style offer: PCMA preferred, G729, CN, media-level c=.
    const TELNYX_STYLE: &str = "v=0\r\no=Telnyx 1234567 1234568 IN IP4 203.0.113.20\r\ns=Telnyx SIP Session\r\nt=0 0\r\nm=audio 30000 RTP/AVP 8 0 9 18 101 13\r\nc=IN IP4 203.0.113.21\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:9 G722/8000\r\na=rtpmap:18 G729/8000\r\na=fmtp:18 annexb=no\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=rtpmap:13 CN/8000\r\na=ptime:20\r\na=maxptime:20\r\na=rtcp:30001\r\na=sendrecv\r\n";

    fn local() -> LocalSdp {
        LocalSdp::new(4242, IpAddr::V4(Ipv4Addr::new(192, 0, 2, 50)), 40000)
    }

    fn text(body: &[u8]) -> String {
        String::from_utf8(body.to_vec()).expect("our SDP is UTF-8")
    }

    fn negotiate(sdp: &str) -> Result<Negotiated, SdpError> {
        RemoteSdp::parse(sdp.as_bytes())?.negotiate()
    }

    /// Replaces the whole `a=<name>...` or `m=`/`c=` line starting with
    /// `prefix` in a fixture.
    fn with_line(sdp: &str, prefix: &str, replacement: &str) -> String {
        sdp.split("\r\n")
            .map(|l| {
                if l.starts_with(prefix) {
                    replacement
                } else {
                    l
                }
            })
            .collect::<Vec<_>>()
            .join("\r\n")
    }

    #[test]
    fn sipp_pcmu_offer_is_accepted_without_telephone_event() {
        let n = negotiate(SIPP_UAC).unwrap();
        assert_eq!(n.codec, Codec::Pcmu);
        assert_eq!(n.payload_type, 0);
        assert_eq!(n.telephone_event, None);
        assert_eq!(n.remote_rtp, Some("127.0.0.1:6000".parse().unwrap()));
        assert_eq!(n.remote_direction, Direction::SendRecv);
        assert_eq!(n.ptime_ms, 20);
    }

    #[test]
    fn sipp_pcma_offer_gets_pcma_and_its_event_type() {
        let n = negotiate(SIPP_UAC_PCAP).unwrap();
        assert_eq!(n.codec, Codec::Pcma);
        assert_eq!(n.payload_type, 8);
        assert_eq!(n.telephone_event, Some(101));
    }

    #[test]
    fn baresip_offer_picks_pcmu_first() {
        let remote = RemoteSdp::parse(BARESIP.as_bytes()).unwrap();
        assert_eq!(remote.session_version, 1057109259);
        let n = remote.negotiate().unwrap();
        assert_eq!(n.codec, Codec::Pcmu);
        assert_eq!(n.telephone_event, Some(101));
        assert_eq!(n.remote_rtp, Some("192.0.2.2:10134".parse().unwrap()));
        assert_eq!(n.ptime_ms, 20);
    }

    #[test]
    fn twilio_style_offer_skips_opus_and_g722_for_pcmu() {
        let remote = RemoteSdp::parse(TWILIO_STYLE.as_bytes()).unwrap();
        let (_, audio) = remote.audio_streams().next().unwrap();
        assert_eq!(audio.formats.len(), 5);
        assert_eq!(audio.formats[0].encoding, "opus");
        assert_eq!(audio.formats[0].channels, 2);
        assert_eq!(audio.maxptime_ms, Some(150));
        assert_eq!(audio.rtcp, Some("198.51.100.7:16933".parse().unwrap()));
        let n = remote.negotiate().unwrap();
        assert_eq!((n.codec, n.payload_type), (Codec::Pcmu, 0));
        assert_eq!(n.telephone_event, Some(101));
        assert_eq!(n.comfort_noise, None);
    }

    #[test]
    fn telnyx_style_offer_keeps_their_pcma_preference_and_tolerates_cn() {
        let remote = RemoteSdp::parse(TELNYX_STYLE.as_bytes()).unwrap();
        let n = remote.negotiate().unwrap();
        assert_eq!((n.codec, n.payload_type), (Codec::Pcma, 8));
        assert_eq!(n.comfort_noise, Some(13));
        // Media-level c= wins (there is no session-level one here).
        assert_eq!(n.remote_rtp, Some("203.0.113.21:30000".parse().unwrap()));
        let (_, audio) = remote.audio_streams().next().unwrap();
        // a=rtcp without an address uses the media address.
        assert_eq!(audio.rtcp, Some("203.0.113.21:30001".parse().unwrap()));

        // Our answer lists PCMA and telephone-event, not CN (we send
        // continuous audio), and nothing of G722/G729.
        let answer = text(&local().answer(&remote, &n, Direction::SendRecv));
        assert!(
            answer.contains("m=audio 40000 RTP/AVP 8 101\r\n"),
            "{answer}"
        );
        assert!(answer.contains("a=rtpmap:8 PCMA/8000\r\n"));
        assert!(answer.contains("a=rtpmap:101 telephone-event/8000\r\n"));
        assert!(answer.contains("a=fmtp:101 0-15\r\n"));
        assert!(!answer.contains("CN/8000"));
        assert!(!answer.contains("G729"));
    }

    #[test]
    fn answer_to_baresip_is_complete_and_parses_back() {
        let remote = RemoteSdp::parse(BARESIP.as_bytes()).unwrap();
        let n = remote.negotiate().unwrap();
        let mut ours = local();
        let answer = ours.answer(&remote, &n, Direction::SendRecv);
        let s = text(&answer);
        assert_eq!(
            s,
            "v=0\r\no=audin 4242 1 IN IP4 192.0.2.50\r\ns=audin\r\nc=IN IP4 192.0.2.50\r\nt=0 0\r\n\
             m=audio 40000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n\
             a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\na=ptime:20\r\na=sendrecv\r\n"
        );
        // What we write, we (and so any SDP parser) read back.
        let back = RemoteSdp::parse(&answer).unwrap().negotiate().unwrap();
        assert_eq!(back.codec, Codec::Pcmu);
        assert_eq!(back.telephone_event, Some(101));
        assert_eq!(back.remote_rtp, Some("192.0.2.50:40000".parse().unwrap()));
    }

    #[test]
    fn our_offer_lists_pcmu_pcma_and_event_101() {
        let mut ours = local();
        let offer = text(&ours.offer(Direction::SendRecv));
        assert!(
            offer.contains("m=audio 40000 RTP/AVP 0 8 101\r\n"),
            "{offer}"
        );
        for line in [
            "a=rtpmap:0 PCMU/8000",
            "a=rtpmap:8 PCMA/8000",
            "a=rtpmap:101 telephone-event/8000",
            "a=fmtp:101 0-15",
            "a=ptime:20",
            "a=sendrecv",
            "o=audin 4242 1 IN IP4 192.0.2.50",
            "c=IN IP4 192.0.2.50",
        ] {
            assert!(
                offer.contains(&format!("{line}\r\n")),
                "{line} missing: {offer}"
            );
        }
        let n = RemoteSdp::parse(offer.as_bytes())
            .unwrap()
            .negotiate()
            .unwrap();
        assert_eq!(n.codec, Codec::Pcmu);
    }

    #[test]
    fn session_version_increments_only_when_the_description_changes() {
        let mut ours = local();
        let v = |b: &[u8]| RemoteSdp::parse(b).unwrap().session_version;
        assert_eq!(v(&ours.offer(Direction::SendRecv)), 1);
        // A session refresh re-offers the same description: same version
        // (RFC 3264 §8), so the far end knows nothing changed.
        assert_eq!(v(&ours.offer(Direction::SendRecv)), 1);
        // Hold changes it.
        assert_eq!(v(&ours.offer(Direction::SendOnly)), 2);
        assert_eq!(v(&ours.offer(Direction::SendRecv)), 3);
        ours.set_media_address(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 51)), 40002);
        let moved = ours.offer(Direction::SendRecv);
        assert_eq!(v(&moved), 4);
        assert!(text(&moved).contains("m=audio 40002 "));
        assert_eq!(ours.version(), 4);
        assert_eq!(ours.session_id(), 4242);
    }

    #[test]
    fn direction_answers_mirror_the_offer() {
        use Direction::*;
        // (what the offer says, what we answer when we want sendrecv)
        for (offer, answer) in [
            (SendRecv, SendRecv),
            (SendOnly, RecvOnly),
            (RecvOnly, SendOnly),
            (Inactive, Inactive),
        ] {
            assert_eq!(SendRecv.answer(offer), answer, "offer {offer}");
            assert_eq!(offer.mirror(), answer);
        }
        // We hold (sendonly) and they offer sendrecv: we answer sendonly.
        assert_eq!(SendOnly.answer(SendRecv), SendOnly);
        assert_eq!(SendOnly.answer(SendOnly), Inactive);
    }

    #[test]
    fn hold_with_sendonly_is_answered_recvonly() {
        let held = with_line(BARESIP, "a=sendrecv", "a=sendonly");
        let remote = RemoteSdp::parse(held.as_bytes()).unwrap();
        let n = remote.negotiate().unwrap();
        assert_eq!(n.remote_direction, Direction::SendOnly);
        assert!(n.is_remote_hold());
        // They still send (music on hold) but do not want ours.
        assert_eq!(n.send_to(), None);
        let answer = text(&local().answer(&remote, &n, Direction::SendRecv));
        assert!(answer.contains("a=recvonly\r\n"), "{answer}");
        assert!(!answer.contains("a=sendrecv"));
    }

    #[test]
    fn hold_with_session_level_inactive_is_answered_inactive() {
        let held = SIPP_UAC.replace("t=0 0\r\n", "t=0 0\r\na=inactive\r\n");
        let remote = RemoteSdp::parse(held.as_bytes()).unwrap();
        let n = remote.negotiate().unwrap();
        assert_eq!(n.remote_direction, Direction::Inactive);
        let answer = text(&local().answer(&remote, &n, Direction::SendRecv));
        assert!(answer.contains("a=inactive\r\n"), "{answer}");
    }

    #[test]
    fn media_level_direction_overrides_session_level() {
        let sdp = BARESIP.replace("t=0 0\r\n", "t=0 0\r\na=inactive\r\n");
        assert_eq!(
            negotiate(&sdp).unwrap().remote_direction,
            Direction::SendRecv
        );
    }

    #[test]
    fn rfc2543_hold_with_zero_address_is_answered_recvonly() {
        let held = BARESIP.replace("c=IN IP4 192.0.2.2", "c=IN IP4 0.0.0.0");
        let remote = RemoteSdp::parse(held.as_bytes()).unwrap();
        let n = remote.negotiate().unwrap();
        assert_eq!(n.remote_rtp, None);
        assert_eq!(n.send_to(), None);
        assert_eq!(n.remote_direction, Direction::SendOnly);
        let answer = text(&local().answer(&remote, &n, Direction::SendRecv));
        assert!(answer.contains("a=recvonly\r\n"), "{answer}");
        // Our own address stays real: we still want their audio.
        assert!(answer.contains("c=IN IP4 192.0.2.50\r\n"));
    }

    #[test]
    fn unhold_reoffer_restores_sendrecv() {
        let n = negotiate(BARESIP).unwrap();
        assert_eq!(n.send_to(), Some("192.0.2.2:10134".parse().unwrap()));
        assert!(!n.is_remote_hold());
    }

    #[test]
    fn no_common_codec_is_a_488() {
        let sdp = with_line(TWILIO_STYLE, "m=audio", "m=audio 16932 RTP/AVP 111 9 18");
        let err = negotiate(&sdp).unwrap_err();
        assert_eq!(
            err,
            SdpError::NoCommonCodec {
                offered: vec!["opus".into(), "G722".into(), "G729".into()]
            }
        );
        assert_eq!(err.sip_status(), 488);
        assert!(err.to_string().contains("\"opus\""), "{err}");
    }

    #[test]
    fn wideband_pcmu_or_stereo_pcma_is_not_g711() {
        let sdp = "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\nm=audio 5000 RTP/AVP 96 97\r\na=rtpmap:96 PCMU/16000\r\na=rtpmap:97 PCMA/8000/2\r\n";
        assert!(matches!(
            negotiate(sdp),
            Err(SdpError::NoCommonCodec { .. })
        ));
    }

    #[test]
    fn dynamic_payload_type_for_pcmu_is_used_as_listed() {
        let sdp = "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\nm=audio 5000 RTP/AVP 96 97\r\na=rtpmap:96 pcmu/8000/1\r\na=rtpmap:97 TELEPHONE-EVENT/8000\r\n";
        let n = negotiate(sdp).unwrap();
        assert_eq!((n.codec, n.payload_type), (Codec::Pcmu, 96));
        assert_eq!(n.telephone_event, Some(97));
    }

    #[test]
    fn telephone_event_at_48khz_only_is_not_taken() {
        let sdp = with_line(
            TWILIO_STYLE,
            "a=rtpmap:101",
            "a=rtpmap:101 telephone-event/48000",
        );
        assert_eq!(negotiate(&sdp).unwrap().telephone_event, None);
    }

    #[test]
    fn srtp_only_offer_is_unsupported_transport() {
        let sdp = SIPP_UAC.replace("RTP/AVP", "RTP/SAVP");
        let err = negotiate(&sdp).unwrap_err();
        assert_eq!(
            err,
            SdpError::UnsupportedTransport {
                proto: "RTP/SAVP".into()
            }
        );
        assert_eq!(err.sip_status(), 488);
    }

    #[test]
    fn video_line_is_declined_with_port_zero_in_the_answer() {
        let sdp = "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\nm=video 5002 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\nm=audio 5000 RTP/SAVP 0\r\nm=audio 5004 RTP/AVP 8\r\n";
        let remote = RemoteSdp::parse(sdp.as_bytes()).unwrap();
        assert_eq!(remote.media_count(), 3);
        let n = remote.negotiate().unwrap();
        assert_eq!(n.media_index, 2);
        assert_eq!(n.codec, Codec::Pcma);
        let answer = text(&local().answer(&remote, &n, Direction::SendRecv));
        let m_lines: Vec<&str> = answer.lines().filter(|l| l.starts_with("m=")).collect();
        assert_eq!(
            m_lines,
            [
                "m=video 0 RTP/AVP 96",
                "m=audio 0 RTP/SAVP 0",
                "m=audio 40000 RTP/AVP 8"
            ]
        );
    }

    #[test]
    fn offer_without_audio_or_with_port_zero_is_no_audio() {
        let video = "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\nm=video 5002 RTP/AVP 96\r\n";
        assert_eq!(negotiate(video), Err(SdpError::NoAudio));
        let disabled = SIPP_UAC.replace("m=audio 6000", "m=audio 0");
        assert_eq!(negotiate(&disabled), Err(SdpError::NoAudio));
        let no_media = "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nt=0 0\r\n";
        assert_eq!(negotiate(no_media), Err(SdpError::NoAudio));
        assert_eq!(SdpError::NoAudio.sip_status(), 488);
    }

    #[test]
    fn static_types_without_rtpmap_are_known() {
        let sdp = "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\nm=audio 5000 RTP/AVP 18 8 13\r\n";
        let n = negotiate(sdp).unwrap();
        assert_eq!(n.codec, Codec::Pcma);
        assert_eq!(n.comfort_noise, Some(13));
    }

    #[test]
    fn lf_only_line_endings_are_accepted() {
        let n = negotiate(&BARESIP.replace("\r\n", "\n")).unwrap();
        assert_eq!(n.codec, Codec::Pcmu);
    }

    #[test]
    fn ipv6_connection_is_used() {
        let sdp = "v=0\r\no=- 1 1 IN IP6 2001:db8::1\r\ns=-\r\nc=IN IP6 2001:db8::1\r\nt=0 0\r\nm=audio 5000 RTP/AVP 0\r\n";
        assert_eq!(
            negotiate(sdp).unwrap().remote_rtp,
            Some("[2001:db8::1]:5000".parse().unwrap())
        );
    }

    #[test]
    fn bad_ptime_is_ignored_not_fatal() {
        let sdp = with_line(BARESIP, "a=ptime", "a=ptime:abc");
        assert_eq!(negotiate(&sdp).unwrap().ptime_ms, DEFAULT_PTIME_MS);
        let sdp = with_line(BARESIP, "a=ptime", "a=ptime:30");
        assert_eq!(negotiate(&sdp).unwrap().ptime_ms, 30);
    }

    #[test]
    fn malformed_descriptions_are_typed_errors() {
        let cases: Vec<(&str, Vec<u8>, u16)> = vec![
            ("empty", b"".to_vec(), 400),
            ("garbage", b"hello world".to_vec(), 400),
            ("version 1", b"v=1\r\n".to_vec(), 400),
            (
                "port not a number",
                SIPP_UAC.replace("6000", "60x0").into_bytes(),
                400,
            ),
            (
                "port out of range",
                SIPP_UAC.replace("6000", "70000").into_bytes(),
                400,
            ),
            (
                "format not a number",
                SIPP_UAC.replace("RTP/AVP 0", "RTP/AVP zero").into_bytes(),
                400,
            ),
            (
                "format over 127",
                SIPP_UAC.replace("RTP/AVP 0", "RTP/AVP 0 200").into_bytes(),
                400,
            ),
            (
                "m= line without formats",
                SIPP_UAC.replace("RTP/AVP 0", "RTP/AVP").into_bytes(),
                400,
            ),
            (
                "host name in c=",
                SIPP_UAC
                    .replace("c=IN IP4 127.0.0.1", "c=IN IP4 media.example.com")
                    .into_bytes(),
                400,
            ),
            (
                "no c= at all",
                SIPP_UAC.replace("c=IN IP4 127.0.0.1\r\n", "").into_bytes(),
                400,
            ),
            (
                "two o= lines",
                SIPP_UAC
                    .replace("s=-", "o=x 1 1 IN IP4 127.0.0.1\r\ns=-")
                    .into_bytes(),
                400,
            ),
            ("invalid UTF-8", b"v=0\r\ns=\xff\xfe\r\n".to_vec(), 400),
            (
                "control character in media name",
                SIPP_UAC.replace("m=audio", "m=au\x1bdio").into_bytes(),
                400,
            ),
        ];
        for (name, body, status) in cases {
            match RemoteSdp::parse(&body).and_then(|r| r.negotiate()) {
                Ok(n) => panic!("{name}: accepted as {n:?}"),
                Err(e) => {
                    assert_eq!(e.sip_status(), status, "{name}: {e}");
                    // Displayed errors never carry raw control characters.
                    assert!(
                        !e.to_string().chars().any(|c| c.is_control()),
                        "{name}: {e:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn oversized_and_many_media_descriptions_are_refused() {
        let mut big = SIPP_UAC.to_owned();
        while big.len() <= MAX_SDP_BYTES {
            big.push_str("a=x-padding:0123456789abcdef0123456789abcdef\r\n");
        }
        assert!(matches!(
            RemoteSdp::parse(big.as_bytes()),
            Err(SdpError::TooLarge { .. })
        ));
        let mut many = SIPP_UAC.to_owned();
        for _ in 0..MAX_MEDIA_LINES {
            many.push_str("m=video 0 RTP/AVP 96\r\n");
        }
        assert_eq!(
            RemoteSdp::parse(many.as_bytes()),
            Err(SdpError::TooManyMedia {
                count: MAX_MEDIA_LINES + 1
            })
        );
    }

    #[test]
    fn malformed_rtpmap_of_another_codec_does_not_fail_the_call() {
        let sdp = with_line(TWILIO_STYLE, "a=rtpmap:111", "a=rtpmap:111 opus");
        assert_eq!(negotiate(&sdp).unwrap().codec, Codec::Pcmu);
    }

    /// Every prefix and single-byte corruption of the real offers: parsing
    /// returns, it never panics.
    #[test]
    fn truncated_and_corrupted_offers_never_panic() {
        for sdp in [SIPP_UAC, SIPP_UAC_PCAP, BARESIP, TWILIO_STYLE, TELNYX_STYLE] {
            let bytes = sdp.as_bytes();
            for end in 0..bytes.len() {
                let _ = RemoteSdp::parse(&bytes[..end]).and_then(|r| r.negotiate());
            }
            for i in 0..bytes.len() {
                for b in [0u8, b' ', b':', b'/', 0xff, b'\n'] {
                    let mut m = bytes.to_vec();
                    m[i] = b;
                    if let Ok(r) = RemoteSdp::parse(&m) {
                        if let Ok(n) = r.negotiate() {
                            // Whatever we accept, we can answer.
                            let _ = local().answer(&r, &n, Direction::SendRecv);
                        }
                    }
                }
            }
        }
    }
}
