//! `audin-operator`: the Audin operator client.
