//! rustls configurations: HBONE server and client, and the control-plane channel.
