//! QUIC transport shell around ControlNode.
