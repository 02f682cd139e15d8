//! `audin-testkit`: test support (fault-injecting proxy, server process control).
