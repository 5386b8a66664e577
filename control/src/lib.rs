//! overlayd control plane: membership (SWIM via foca), FDB distribution, authentication and the QUIC
//! transport that carries them. The state machine is sans-IO: it is fed messages and `now`.
