//! Domain values to the protobuf messages several calls share (a message,
//! a feed entry, a conversation, the cluster's members). Protobuf stays at
//! the edge: nothing here is stored, and nothing below `service` sees it.

use std::sync::Arc;

use chat_proto as pb;
use openraft::ServerState;

use crate::hub::News;
use crate::node::ClusterView;
use crate::raft::Member;
use crate::state::{
    Change, ConversationSummary, FeedEntry, FeedKind, GroupChange, GroupNoticeView, MessageView,
};

pub fn message(m: MessageView) -> pb::Message {
    let meta = m.meta;
    pb::Message {
        id: meta.id.0,
        from: meta.from_name,
        from_account_id: meta.from.0,
        to: meta.to_name,
        to_account_id: meta.to.0,
        body: m.body,
        sent_at_ms: m.at_ms,
        delivered: meta.delivered,
        read: meta.read,
        conversation_id: meta.conversation.0,
        in_group: meta.in_group,
        read_by: meta.read_by,
        readers: meta.readers,
    }
}

pub fn group_event(n: GroupNoticeView) -> pb::GroupEvent {
    use pb::group_event::Kind;
    let kind = match &n.change {
        Change::Created { .. } => Kind::Created,
        Change::AccountDeleted => Kind::AccountDeleted,
        Change::Changed(c) => match c {
            GroupChange::Added(_) => Kind::Added,
            GroupChange::Removed(_) => Kind::Removed,
            GroupChange::Left => Kind::Left,
            GroupChange::Renamed(_) => Kind::Renamed,
            GroupChange::OwnerChanged(_) => Kind::OwnerChanged,
            GroupChange::AdminSet { admin: true, .. } => Kind::AdminAdded,
            GroupChange::AdminSet { admin: false, .. } => Kind::AdminRemoved,
        },
    };
    pb::GroupEvent {
        kind: kind as i32,
        conversation_id: n.conversation.0,
        title: n.title,
        by: n.by_name,
        by_account_id: n.by.0,
        accounts: (n.accounts.into_iter())
            .map(|(id, name)| pb::AccountRef {
                account_id: id.0,
                username: name,
            })
            .collect(),
        new_owner_account_id: n.new_owner.map_or(0, |a| a.0),
        id: n.index,
    }
}

pub fn event(e: FeedEntry) -> pb::Event {
    let kind = match e.kind {
        FeedKind::Message(m) => pb::event::Kind::Message(pb::Message {
            // Receipts travel as their own events on the stream.
            delivered: false,
            read: false,
            // A live message's view is shared by the streams of every
            // member it went to: each takes a copy.
            ..message(Arc::unwrap_or_clone(m))
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
            conversation,
        } => pb::event::Kind::Read(pb::Read {
            peer: peer_name,
            peer_account_id: peer.0,
            up_to: up_to.0,
            conversation_id: conversation.0,
        }),
        FeedKind::Deleted(ids) => pb::event::Kind::Deleted(pb::Deleted {
            ids: ids.into_iter().map(|i| i.0).collect(),
        }),
        FeedKind::Group(n) => pb::event::Kind::Group(group_event(n)),
        FeedKind::PeerGone {
            peer,
            peer_name,
            conversation,
        } => pb::event::Kind::PeerGone(pb::PeerGone {
            account_id: peer.0,
            username: peer_name,
            conversation_id: conversation.0,
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

pub fn conversation(c: ConversationSummary) -> pb::Conversation {
    let (is_group, title, owner, members) = match c.group {
        Some((title, owner, members)) => (true, title, owner.0, members as u32),
        None => (false, String::new(), 0, 2),
    };
    pb::Conversation {
        peer: c.peer_name,
        peer_account_id: c.peer.0,
        last_message: c.last.map(message),
        unread_count: c.unread,
        conversation_id: c.conversation.0,
        is_group,
        title,
        owner_account_id: owner,
        member_count: members,
    }
}

pub fn member(m: Member) -> pb::Member {
    pb::Member {
        node_id: m.node_id,
        address: m.address,
        voter: m.voter,
    }
}

pub fn status(s: ClusterView) -> pb::StatusResponse {
    let role = match s.role {
        ServerState::Leader => pb::Role::Leader,
        ServerState::Follower => pb::Role::Follower,
        ServerState::Candidate => pb::Role::Candidate,
        ServerState::Learner => pb::Role::Learner,
        ServerState::Shutdown => pb::Role::Shutdown,
    };
    pb::StatusResponse {
        node_id: s.node_id,
        leader_id: s.leader_id.unwrap_or(0),
        leader_address: s.leader_address.unwrap_or_default(),
        members: s.members.into_iter().map(member).collect(),
        last_log_index: s.last_log_index,
        applied_index: s.applied_index,
        committed_index: s.committed_index,
        term: s.term,
        role: role as i32,
    }
}

/// News that is not in the log, as a stream event: its id is 0, it does
/// not move the subscriber's cursor.
pub fn news(news: News) -> pb::Event {
    use pb::event::Kind;
    let ids = |v: Vec<log_format::events::AccountId>| v.into_iter().map(|a| a.0).collect();
    let kind = match news {
        News::Presence {
            full,
            online,
            offline,
        } => Kind::Presence(pb::Presence {
            full,
            online: ids(online),
            offline: ids(offline),
        }),
        News::Directory(d) => Kind::Directory(pb::Directory {
            created: (d.created.iter())
                .map(|(id, username, created_at_ms)| pb::Account {
                    username: username.clone(),
                    account_id: id.0,
                    created_at_ms: *created_at_ms,
                    online: false,
                })
                .collect(),
            deleted: d.deleted.iter().map(|a| a.0).collect(),
        }),
    };
    pb::Event {
        id: 0,
        kind: Some(kind),
    }
}
