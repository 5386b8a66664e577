//! overlayd daemon: configuration, runtime wiring and the admin endpoint.
