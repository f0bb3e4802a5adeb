//! The client library: placeholder until it lands.
