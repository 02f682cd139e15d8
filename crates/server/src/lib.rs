//! `audin-server`: the Audin operator reference service.
