//! Cluster CA, node credentials and join tokens (see module docs below).
