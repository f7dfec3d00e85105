//! Raw proxy-wasm ABI imports for the host calls whose SDK wrappers (`proxy_wasm::hostcalls`)
//! `panic!` on a status they do not expect. A panic in the VM kills it, and with it every
//! request on that worker, so these wrappers treat *any* non-OK status as "not available".
//! Memory returned by the host is allocated through the SDK's `proxy_on_memory_allocate`
//! (the global allocator), so it is reclaimed here as a `Vec`.

use std::ptr::{null, null_mut};

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use proxy_wasm::types::{BufferType, LogLevel, MapType, MetricType};

const OK: u32 = 0;

#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_get_buffer_bytes(
        buffer_type: u32,
        start: usize,
        max_size: usize,
        return_buffer_data: *mut *mut u8,
        return_buffer_size: *mut usize,
    ) -> u32;
    fn proxy_get_header_map_value(
        map_type: u32,
        key_data: *const u8,
        key_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
    ) -> u32;
    fn proxy_add_header_map_value(
        map_type: u32,
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
    ) -> u32;
    fn proxy_remove_header_map_value(map_type: u32, key_data: *const u8, key_size: usize) -> u32;
    fn proxy_set_effective_context(context_id: u32) -> u32;
    fn proxy_log(level: u32, message_data: *const u8, message_size: usize) -> u32;
    fn proxy_get_current_time_nanoseconds(return_time: *mut u64) -> u32;
    fn proxy_set_tick_period_milliseconds(period: u32) -> u32;
    fn proxy_continue_stream(stream_type: u32) -> u32;
    fn proxy_define_metric(
        metric_type: u32,
        name_data: *const u8,
        name_size: usize,
        return_id: *mut u32,
    ) -> u32;
    fn proxy_increment_metric(metric_id: u32, offset: i64) -> u32;
    fn proxy_record_metric(metric_id: u32, value: u64) -> u32;
    fn proxy_call_foreign_function(
        function_name_data: *const u8,
        function_name_size: usize,
        arguments_data: *const u8,
        arguments_size: usize,
        results_data: *mut *mut u8,
        results_size: *mut usize,
    ) -> u32;
}

/// Take ownership of a host-allocated buffer.
///
/// # Safety
/// `data`/`size` must come from the host through the SDK allocator (or be null).
unsafe fn take(data: *mut u8, size: usize) -> Option<Vec<u8>> {
    if data.is_null() {
        None
    } else {
        Some(Vec::from_raw_parts(data, size, size))
    }
}

pub fn get_buffer(kind: BufferType, start: usize, max_size: usize) -> Option<Vec<u8>> {
    let (mut data, mut size) = (null_mut(), 0usize);
    // SAFETY: out-pointers are valid locals; the host fills them or leaves them null.
    unsafe {
        let status = proxy_get_buffer_bytes(kind as u32, start, max_size, &mut data, &mut size);
        let bytes = take(data, size);
        if status == OK {
            bytes
        } else {
            None
        }
    }
}

pub fn get_header(map: MapType, key: &str) -> Option<String> {
    let (mut data, mut size) = (null_mut(), 0usize);
    // SAFETY: as above.
    unsafe {
        let status =
            proxy_get_header_map_value(map as u32, key.as_ptr(), key.len(), &mut data, &mut size);
        let bytes = take(data, size);
        if status == OK {
            bytes.and_then(|b| String::from_utf8(b).ok())
        } else {
            None
        }
    }
}

pub fn remove_header(map: MapType, key: &str) -> bool {
    // SAFETY: pointer and length of a live string.
    unsafe { proxy_remove_header_map_value(map as u32, key.as_ptr(), key.len()) == OK }
}

pub fn add_header(map: MapType, key: &str, value: &str) -> bool {
    // SAFETY: pointers and lengths of live strings.
    unsafe {
        proxy_add_header_map_value(
            map as u32,
            key.as_ptr(),
            key.len(),
            value.as_ptr(),
            value.len(),
        ) == OK
    }
}

pub fn set_effective_context(context_id: u32) -> bool {
    // SAFETY: plain value call.
    unsafe { proxy_set_effective_context(context_id) == OK }
}

/// Call an Envoy foreign function; its result bytes (if any) are dropped.
pub fn call_foreign_function(name: &str, args: &[u8]) -> Result<(), u32> {
    let (mut data, mut size) = (null_mut(), 0usize);
    let args_ptr = if args.is_empty() {
        null()
    } else {
        args.as_ptr()
    };
    // SAFETY: as above.
    unsafe {
        let status = proxy_call_foreign_function(
            name.as_ptr(),
            name.len(),
            args_ptr,
            args.len(),
            &mut data,
            &mut size,
        );
        drop(take(data, size));
        if status == OK {
            Ok(())
        } else {
            Err(status)
        }
    }
}

pub fn log(level: LogLevel, message: &str) {
    // SAFETY: pointer and length of a live string.
    unsafe {
        proxy_log(level as u32, message.as_ptr(), message.len());
    }
}

pub fn now() -> Option<SystemTime> {
    let mut nanos = 0u64;
    // SAFETY: valid out-pointer.
    let status = unsafe { proxy_get_current_time_nanoseconds(&mut nanos) };
    (status == OK).then(|| UNIX_EPOCH + Duration::from_nanos(nanos))
}

pub fn set_tick_period(period: Duration) {
    // SAFETY: plain value call.
    unsafe {
        proxy_set_tick_period_milliseconds(u32::try_from(period.as_millis()).unwrap_or(u32::MAX));
    }
}

/// Resume the paused request (`StreamType::HttpRequest` = 0).
pub fn resume_request() {
    // SAFETY: plain value call.
    unsafe {
        proxy_continue_stream(0);
    }
}

pub fn define_metric(kind: MetricType, name: &str) -> Option<u32> {
    let mut id = 0u32;
    // SAFETY: pointer and length of a live string; valid out-pointer.
    let status = unsafe { proxy_define_metric(kind as u32, name.as_ptr(), name.len(), &mut id) };
    (status == OK).then_some(id)
}

pub fn increment_metric(id: u32, by: i64) {
    // SAFETY: plain value call.
    unsafe {
        proxy_increment_metric(id, by);
    }
}

pub fn record_metric(id: u32, value: u64) {
    // SAFETY: plain value call.
    unsafe {
        proxy_record_metric(id, value);
    }
}
