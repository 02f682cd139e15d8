//! Checking SIP digest credentials that a far end received: SIPp 3.6.1's
//! `<verifyauth>` reads only `Authorization`, so a 407 challenge's
//! `Proxy-Authorization` is verified from SIPp's message log with the
//! service's own checker, [`audin_server::sip::digest`] (one digest
//! implementation in the project).

pub use audin_server::sip::digest::{DigestAlgorithm, DigestError, parse_params, verify};
