//! Domain types to protobuf messages. Protobuf stays at the edge: nothing
//! here is stored, and nothing else builds these messages.

use chat_proto as pb;

use crate::state::{FeedEvent, FeedKind, MessageView};

pub fn message(m: MessageView) -> pb::Message {
    pb::Message {
        id: m.id.0,
        from: m.from_name,
        from_account_id: m.from.0,
        to: m.to_name,
        to_account_id: m.to.0,
        body: m.body,
        sent_at_ms: m.at_ms,
        delivered: m.delivered,
        read: m.read,
    }
}

pub fn event(e: FeedEvent) -> pb::Event {
    let kind = match e.kind {
        FeedKind::Message(m) => pb::event::Kind::Message(pb::Message {
            // Receipts travel as their own events on the stream.
            delivered: false,
            read: false,
            ..message(m)
        }),
        FeedKind::Delivered {
            peer,
            peer_name,
            up_to,
        } => pb::event::Kind::Delivered(pb::Delivered {
            peer: peer_name,
            peer_account_id: peer.0,
            up_to: up_to.0,
        }),
        FeedKind::Read {
            peer,
            peer_name,
            up_to,
        } => pb::event::Kind::Read(pb::Read {
            peer: peer_name,
            peer_account_id: peer.0,
            up_to: up_to.0,
        }),
        FeedKind::Deleted(ids) => pb::event::Kind::Deleted(pb::Deleted {
            ids: ids.into_iter().map(|i| i.0).collect(),
        }),
    };
    pb::Event {
        id: e.index,
        kind: Some(kind),
    }
}

/// The marker sent once the backlog is out and live events begin.
pub fn caught_up(cursor: u64) -> pb::Event {
    pb::Event {
        id: cursor,
        kind: Some(pb::event::Kind::CaughtUp(pb::CaughtUp { cursor })),
    }
}
