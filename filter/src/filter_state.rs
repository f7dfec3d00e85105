//! The argument of Envoy's `set_envoy_filter_state` foreign function, encoded by hand.
//!
//! Envoy 1.40 refuses request-header changes once the body has been read, so the pod is
//! handed to the `ORIGINAL_DST` cluster through filter state instead. The foreign function
//! takes a serialized `SetEnvoyFilterStateArguments` (envoy/source/extensions/common/wasm/
//! ext/set_envoy_filter_state.proto: `string path = 1; string value = 2; LifeSpan span = 3;`).
//! Two string fields do not justify a protobuf code generator in a wasm filter, so this
//! file writes the three wire-format fields directly. `span` is left at its default
//! (`FilterChain`: the state lives as long as this request's filter chain), which also keeps
//! the message valid for older Envoys whose proto has no field 3.

/// The well-known filter state key read by the `ORIGINAL_DST` cluster.
pub const ORIGINAL_DST_KEY: &str = "envoy.network.transport_socket.original_dst_address";

/// The Gateway API Inference Extension's destination header, which the route table fills
/// from the filter state for engines and gateways that read it. A client's own copy is
/// removed from every request, so only the filter's choice ever reaches a pod.
pub const DESTINATION_HEADER: &str = "x-gateway-destination-endpoint";

/// Serialized `SetEnvoyFilterStateArguments { path: key, value }`.
pub fn set_filter_state_arguments(key: &str, value: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(key.len() + value.len() + 8);
    put_string_field(&mut out, 1, key);
    put_string_field(&mut out, 2, value);
    out
}

fn put_string_field(out: &mut Vec<u8>, field: u32, s: &str) {
    // Wire type 2 (length-delimited).
    put_varint(out, u64::from(field << 3 | 2));
    put_varint(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_the_two_string_fields_in_protobuf_wire_format() {
        let bytes = set_filter_state_arguments("k", "10.0.0.5:8000");
        let mut expected = vec![0x0a, 1, b'k', 0x12, 13];
        expected.extend_from_slice(b"10.0.0.5:8000");
        assert_eq!(bytes, expected);
    }

    #[test]
    fn long_values_use_multi_byte_lengths() {
        let key = "x".repeat(300);
        let bytes = set_filter_state_arguments(&key, "");
        // 300 = 0b1_0010_1100 -> 0xac 0x02
        assert_eq!(&bytes[..3], &[0x0a, 0xac, 0x02]);
        assert_eq!(bytes.len(), 3 + 300 + 2);
        assert_eq!(&bytes[303..], &[0x12, 0]);
        assert_eq!(
            set_filter_state_arguments(ORIGINAL_DST_KEY, "1.2.3.4:5")[1] as usize,
            ORIGINAL_DST_KEY.len()
        );
    }
}
