//! virtio-net header, TSO superframe segmentation (GSO split) and TCP receive coalescing (GRO). Pure functions over caller-owned buffers.
