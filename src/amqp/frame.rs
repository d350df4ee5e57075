//! How big a message's properties are on the wire. They travel in one header frame,
//! which must fit the connection's `frame_max` (131072 bytes by default): a copy of a
//! message with headers of our own added may not fit where the original did, and the
//! broker then closes the whole connection (`FRAME_ERROR`), not the one publish.

use lapin::types::{AMQPValue, FieldTable};
use lapin::BasicProperties;

/// A header frame's fixed parts: class, weight, body size and property flags (14 bytes),
/// with the frame's own header and end (8 bytes).
const FIXED: usize = 22;

/// The bytes of `props` in a header frame, the frame's own included.
pub(super) fn header_frame_len(props: &BasicProperties) -> usize {
    let short =
        |s: &Option<lapin::types::ShortString>| s.as_ref().map_or(0, |s| 1 + s.as_str().len());
    FIXED
        + short(props.content_type())
        + short(props.content_encoding())
        + props.headers().as_ref().map_or(0, table_len)
        + props.delivery_mode().map_or(0, |_| 1)
        + props.priority().map_or(0, |_| 1)
        + short(props.correlation_id())
        + short(props.reply_to())
        + short(props.expiration())
        + short(props.message_id())
        + props.timestamp().map_or(0, |_| 8)
        + short(props.kind())
        + short(props.user_id())
        + short(props.app_id())
        + short(props.cluster_id())
}

/// The bytes of a field table: its length, then each name and value.
fn table_len(table: &FieldTable) -> usize {
    4 + table
        .inner()
        .iter()
        .map(|(name, value)| 1 + name.as_str().len() + 1 + value_len(value))
        .sum::<usize>()
}

/// The bytes of a value after its type byte.
fn value_len(value: &AMQPValue) -> usize {
    match value {
        AMQPValue::Boolean(_) | AMQPValue::ShortShortInt(_) | AMQPValue::ShortShortUInt(_) => 1,
        AMQPValue::ShortInt(_) | AMQPValue::ShortUInt(_) => 2,
        AMQPValue::LongInt(_) | AMQPValue::LongUInt(_) | AMQPValue::Float(_) => 4,
        AMQPValue::DecimalValue(_) => 5,
        AMQPValue::LongLongInt(_) | AMQPValue::Double(_) | AMQPValue::Timestamp(_) => 8,
        AMQPValue::ShortString(s) => 1 + s.as_str().len(),
        AMQPValue::LongString(s) => 4 + s.as_bytes().len(),
        AMQPValue::ByteArray(b) => 4 + b.as_slice().len(),
        AMQPValue::FieldArray(a) => {
            4 + a.as_slice().iter().map(|v| 1 + value_len(v)).sum::<usize>()
        }
        AMQPValue::FieldTable(t) => table_len(t),
        AMQPValue::Void => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_header_frame_is_measured_as_the_wire_has_it() {
        let mut headers = FieldTable::default();
        headers.insert(
            "x-big".into(),
            AMQPValue::LongString(vec![b'h'; 1000].into()),
        );
        let props = BasicProperties::default()
            .with_headers(headers)
            .with_delivery_mode(2);
        // 22 fixed, table length 4, name 1 + 5, type 1, string 4 + 1000, delivery mode 1.
        assert_eq!(header_frame_len(&props), 22 + 4 + 6 + 1 + 1004 + 1);
        assert_eq!(header_frame_len(&BasicProperties::default()), FIXED);
    }
}
