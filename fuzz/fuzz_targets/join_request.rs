//! Any bytes on a join stream: the request and response decoders and the stored-attestation decoder never
//! panic, and a request that decodes re-encodes to an equal request.
#![no_main]
use control::join::{JoinRequest, JoinResponse};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok((req, _csr)) = JoinRequest::decode(data) {
        assert_eq!(JoinRequest::decode(&req.encode()).map(|(r, _)| r), Ok(req));
    }
    let _ = JoinResponse::decode(data);
    let _ = control::auth::decode_attestation(data);
});
