//! The FDB's MAC hasher: much cheaper than SipHash on a 6-byte key, and keyed per table so that a flood of
//! chosen MACs cannot aim at one shard or bucket.

use std::hash::{BuildHasher, Hasher};

/// A keyed hasher for MAC keys: much cheaper than SipHash, and keyed per table so a flood of chosen MACs cannot
/// aim at one shard/bucket without knowing the key.
#[derive(Clone, Debug)]
pub struct MacHashBuilder {
    key: u64,
}

impl MacHashBuilder {
    pub(super) fn new() -> Self {
        // RandomState is the std source of per-process randomness; we only borrow its key.
        let key = std::collections::hash_map::RandomState::new().hash_one(0x6f76_6c61_7964u64);
        MacHashBuilder { key: key | 1 }
    }
}

#[derive(Debug)]
pub struct MacHasher {
    key: u64,
    acc: u64,
}

impl Hasher for MacHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.acc = self.acc.rotate_left(8) ^ u64::from(b);
        }
    }
    fn finish(&self) -> u64 {
        // splitmix64 finaliser over key-mixed input.
        let mut z = self.acc ^ self.key;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

impl BuildHasher for MacHashBuilder {
    type Hasher = MacHasher;
    fn build_hasher(&self) -> MacHasher {
        MacHasher {
            key: self.key,
            acc: 0,
        }
    }
}
