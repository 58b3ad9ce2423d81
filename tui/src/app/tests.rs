//! Unit tests of the app: every action and every server event, fed to an
//! [`App`] and checked against its state and the effects it asks for.

use std::time::{Duration, UNIX_EPOCH};

use chat_client::{
    Account, AccountId, AccountPage, ConnectionState, Conversation as Listed, ConversationMember,
    ConversationMembers, Conversations, Event, GroupChange, GroupChangeKind, GroupEdit,
    HistoryPage, Message, MessageId, SentMessage,
};
use crossterm::event::{
    Event as TermEvent, KeyCode, KeyEvent, KeyEventKind, KeyModifiers, MouseEvent, MouseEventKind,
};

use super::{App, AppConfig};
use crate::action::{Action, Effect, Scroll};
use crate::components::dialog::Dialog;
use crate::components::sign_in::Focus;
use crate::message::{Command, Field, Outgoing, ServerEvent, SignInRequest};
use crate::state::{ChatId, History, Link, Pane, Receipt, Screen};

const ME: AccountId = 1;
const BOB: AccountId = 2;
const CAROL: AccountId = 3;

fn name(id: AccountId) -> &'static str {
    match id {
        ME => "alice",
        BOB => "bob",
        CAROL => "carol",
        _ => "someone",
    }
}

fn message(id: MessageId, from: AccountId, to: AccountId, body: &str) -> Message {
    Message {
        id,
        from: name(from).to_owned(),
        from_account_id: from,
        to: name(to).to_owned(),
        to_account_id: to,
        body: body.to_owned(),
        sent_at: UNIX_EPOCH + Duration::from_secs(1_700_000_000 + id * 60),
        delivered: false,
        read: false,
        conversation_id: 0,
        in_group: false,
        read_by: 0,
        readers: 1,
    }
}

fn account(id: AccountId) -> Account {
    Account {
        username: name(id).to_owned(),
        account_id: id,
        created_at: UNIX_EPOCH,
        online: id == BOB,
    }
}

fn key(code: KeyCode) -> KeyEvent {
    KeyEvent::new(code, KeyModifiers::NONE)
}

fn commands(effects: &[Effect]) -> Vec<Command> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Command(c) => Some(c.clone()),
            _ => None,
        })
        .collect()
}

/// An app signed in as alice, with bob and carol in the directory and an
/// empty conversation list, its effects drained.
fn signed_in() -> App {
    let mut app = App::new(AppConfig::default());
    app.on_server_event(ServerEvent::SignedIn {
        username: "alice".to_owned(),
        account_id: ME,
        server: "a:1".to_owned(),
    });
    app.on_server_event(ServerEvent::Accounts {
        pattern: "*".to_owned(),
        appended: false,
        page: AccountPage {
            accounts: vec![account(ME), account(BOB), account(CAROL)],
            next_page_token: None,
        },
    });
    app.on_server_event(ServerEvent::Conversations(Conversations {
        conversations: vec![],
        total_unread: 0,
    }));
    app.take_effects();
    app
}

/// Opens the conversation with `peer` and answers its history request.
fn open_with_history(app: &mut App, peer: AccountId, messages: Vec<Message>) {
    app.open(ChatId::Direct(peer), name(peer));
    app.on_server_event(ServerEvent::History {
        chat: ChatId::Direct(peer),
        page: Ok(HistoryPage {
            messages: messages.into_iter().rev().collect(),
            next_before: None,
            group_changes: Vec::new(),
        }),
    });
}

fn live(app: &mut App, message: Message) {
    app.on_server_event(ServerEvent::Live(Event::Message {
        id: message.id,
        message,
    }));
}

fn caught_up(app: &mut App, id: MessageId) {
    app.on_server_event(ServerEvent::Live(Event::CaughtUp { id }));
}

#[test]
fn sign_in_sends_the_form_and_waits() {
    let mut app = App::new(AppConfig {
        username: Some("alice".to_owned()),
        ..AppConfig::default()
    });
    assert_eq!(app.sign_in.focus(), Focus::Password);
    for c in "secret-pw".chars() {
        app.handle_key(key(KeyCode::Char(c)));
    }
    app.handle_key(key(KeyCode::Enter));
    assert!(app.sign_in.is_busy());
    assert_eq!(
        commands(&app.take_effects()),
        [Command::SignIn(SignInRequest {
            servers: vec![chat_client::DEFAULT_SERVER.to_owned()],
            username: "alice".to_owned(),
            password: "secret-pw".to_owned(),
            create: false,
        })]
    );
    // A second Enter while busy sends nothing.
    app.handle_key(key(KeyCode::Enter));
    assert!(app.take_effects().is_empty());
}

#[test]
fn a_refused_sign_in_shows_next_to_its_field() {
    let mut app = App::new(AppConfig::default());
    app.update(Action::SignIn(SignInRequest {
        servers: vec![chat_client::DEFAULT_SERVER.to_owned()],
        username: "alice".to_owned(),
        password: "secret-pw".to_owned(),
        create: false,
    }));
    assert!(app.sign_in.is_busy());
    app.on_server_event(ServerEvent::SignInFailed {
        field: Some(Field::Password),
        message: "wrong username or password".to_owned(),
    });
    assert!(!app.sign_in.is_busy());
    assert_eq!(
        app.sign_in.error(Some(Field::Password)),
        Some("wrong username or password")
    );
    assert_eq!(app.sign_in.focus(), Focus::Password);
    app.on_server_event(ServerEvent::SignInFailed {
        field: None,
        message: "internal".to_owned(),
    });
    assert_eq!(app.sign_in.error(None), Some("internal"));
}

#[test]
fn signing_in_opens_the_main_screen_and_remembers_the_user() {
    let mut app = App::new(AppConfig::default());
    app.handle_key(key(KeyCode::Tab));
    app.handle_key(key(KeyCode::Char('p')));
    app.handle_key(key(KeyCode::Char('w')));
    assert_eq!(app.sign_in.password(), "pw");
    app.on_server_event(ServerEvent::SignedIn {
        username: "alice".to_owned(),
        account_id: ME,
        server: "a:1".to_owned(),
    });
    assert_eq!(app.state.screen, Screen::Main);
    assert_eq!(app.state.focus, Pane::Users);
    assert!(
        app.sign_in.password().is_empty(),
        "the password is not kept"
    );
    let effects = app.take_effects();
    assert!(effects.contains(&Effect::Remember {
        servers: vec![chat_client::DEFAULT_SERVER.to_owned()],
        username: "alice".to_owned(),
    }));
    assert_eq!(
        commands(&effects),
        [Command::ListAccounts {
            pattern: "*".to_owned(),
            page_token: None
        }]
    );
}

#[test]
fn users_are_sorted_unread_then_recent_then_the_directory() {
    let mut app = signed_in();
    app.on_server_event(ServerEvent::Conversations(Conversations {
        conversations: vec![Listed {
            peer: "carol".to_owned(),
            peer_account_id: CAROL,
            conversation_id: 1000 + CAROL,
            group: None,
            last_message: Some(message(10, CAROL, ME, "hi")),
            unread: 0,
        }],
        total_unread: 0,
    }));
    let order =
        |app: &App| -> Vec<String> { app.state.user_rows().into_iter().map(|r| r.name).collect() };
    // Alice herself is never listed.
    assert_eq!(order(&app), ["carol", "bob"]);
    caught_up(&mut app, 10);
    live(&mut app, message(11, BOB, ME, "news"));
    assert_eq!(order(&app), ["bob", "carol"]);
    assert_eq!(app.state.user_rows()[0].unread, 1);
    assert_eq!(app.state.total_unread(), 1);
}

#[test]
fn looking_is_not_reading_enter_opens_loads_and_marks_read() {
    let mut app = signed_in();
    app.on_server_event(ServerEvent::Conversations(Conversations {
        conversations: vec![Listed {
            peer: "bob".to_owned(),
            peer_account_id: BOB,
            conversation_id: 1000 + BOB,
            group: None,
            last_message: Some(message(12, BOB, ME, "two")),
            unread: 2,
        }],
        total_unread: 2,
    }));
    // The cursor passes over bob: nothing opens, nothing is read.
    app.handle_key(key(KeyCode::Char('j')));
    app.handle_key(key(KeyCode::Char('j')));
    app.handle_key(key(KeyCode::Char('k')));
    assert_eq!(app.state.highlight, Some(ChatId::Direct(BOB)));
    assert_eq!(app.state.selected, None);
    assert!(commands(&app.take_effects()).is_empty());
    assert_eq!(app.state.conversations[&ChatId::Direct(BOB)].unread, 2);
    app.handle_key(key(KeyCode::Enter));
    assert_eq!(app.state.selected, Some(ChatId::Direct(BOB)));
    assert_eq!(app.state.focus, Pane::Compose);
    assert_eq!(
        commands(&app.take_effects()),
        [Command::LoadHistory {
            chat: ChatId::Direct(BOB),
            before: None
        }]
    );
    app.on_server_event(ServerEvent::History {
        chat: ChatId::Direct(BOB),
        page: Ok(HistoryPage {
            messages: vec![
                message(12, BOB, ME, "two"),
                message(11, BOB, ME, "one"),
                message(10, ME, BOB, "mine"),
                message(9, BOB, ME, "old"),
            ],
            next_before: Some(9),
            group_changes: Vec::new(),
        }),
    });
    let conversation = &app.state.conversations[&ChatId::Direct(BOB)];
    assert_eq!(conversation.new_marker, Some(11), "above the first unread");
    assert_eq!(conversation.unread, 0);
    assert_eq!(conversation.history, History::More(9));
    assert_eq!(
        commands(&app.take_effects()),
        [Command::MarkRead {
            chat: ChatId::Direct(BOB),
            up_to: 12
        }]
    );
    // Opening another and back: no new request, the marker is gone.
    app.update(Action::Focus(Pane::Users));
    app.handle_key(key(KeyCode::Char('j')));
    app.handle_key(key(KeyCode::Enter));
    app.update(Action::Focus(Pane::Users));
    app.handle_key(key(KeyCode::Char('k')));
    app.handle_key(key(KeyCode::Enter));
    assert_eq!(app.state.selected, Some(ChatId::Direct(BOB)));
    assert_eq!(
        app.state.conversations[&ChatId::Direct(BOB)].new_marker,
        None
    );
    assert!(!commands(&app.take_effects()).iter().any(|c| matches!(
        c,
        Command::LoadHistory {
            chat: ChatId::Direct(BOB),
            ..
        }
    )));
}

#[test]
fn the_filter_asks_the_server_and_ignores_stale_pages() {
    let mut app = signed_in();
    app.handle_key(key(KeyCode::Char('/')));
    assert!(app.is_typing());
    app.handle_key(key(KeyCode::Char('c')));
    assert_eq!(
        commands(&app.take_effects()),
        [Command::ListAccounts {
            pattern: "*c*".to_owned(),
            page_token: None
        }]
    );
    // q is a letter while typing the filter.
    app.handle_key(key(KeyCode::Char('q')));
    assert!(!app.take_effects().contains(&Effect::Quit));
    app.handle_key(key(KeyCode::Backspace));
    app.take_effects();
    // A page for an older pattern is dropped.
    app.on_server_event(ServerEvent::Accounts {
        pattern: "*cq*".to_owned(),
        appended: false,
        page: AccountPage {
            accounts: vec![],
            next_page_token: None,
        },
    });
    assert_eq!(app.state.directory.accounts.len(), 3);
    app.on_server_event(ServerEvent::Accounts {
        pattern: "*c*".to_owned(),
        appended: false,
        page: AccountPage {
            accounts: vec![account(CAROL)],
            next_page_token: Some("next".to_owned()),
        },
    });
    let names: Vec<String> = app.state.user_rows().into_iter().map(|r| r.name).collect();
    assert_eq!(names, ["carol"]);
    app.handle_key(key(KeyCode::Enter));
    assert!(!app.is_typing());
    assert_eq!(app.state.directory.pattern, "c");
    // Near the end of the list, the next page is fetched.
    app.handle_key(key(KeyCode::Char('j')));
    assert!(
        commands(&app.take_effects()).contains(&Command::ListAccounts {
            pattern: "*c*".to_owned(),
            page_token: Some("next".to_owned())
        })
    );
    app.on_server_event(ServerEvent::Accounts {
        pattern: "*c*".to_owned(),
        appended: true,
        page: AccountPage {
            accounts: vec![Account {
                username: "cy".to_owned(),
                ..account(4)
            }],
            next_page_token: None,
        },
    });
    assert_eq!(app.state.directory.accounts.len(), 2);
    // Esc drops the filter and reloads everyone.
    app.handle_key(key(KeyCode::Esc));
    assert_eq!(app.state.directory.pattern, "");
    assert!(
        commands(&app.take_effects()).contains(&Command::ListAccounts {
            pattern: "*".to_owned(),
            page_token: None
        })
    );
    app.handle_key(key(KeyCode::Char('r')));
    assert!(
        commands(&app.take_effects()).contains(&Command::ListAccounts {
            pattern: "*".to_owned(),
            page_token: None
        })
    );
}

#[test]
fn tab_cycles_the_panes_and_q_quits_only_when_not_typing() {
    let mut app = signed_in();
    let tab = key(KeyCode::Tab);
    app.handle_key(tab);
    assert_eq!(app.state.focus, Pane::Inbox);
    app.handle_key(tab);
    assert_eq!(app.state.focus, Pane::Compose);
    app.handle_key(key(KeyCode::Char('q')));
    assert!(app.take_effects().is_empty());
    assert_eq!(app.compose.draft(), "q");
    app.handle_key(key(KeyCode::BackTab));
    assert_eq!(app.state.focus, Pane::Inbox);
    app.update(Action::Focus(Pane::Users));
    assert_eq!(app.state.focus, Pane::Users);
    app.handle_key(key(KeyCode::Char('q')));
    assert_eq!(app.take_effects(), [Effect::Quit]);
    app.update(Action::Focus(Pane::Compose));
    app.handle_key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL));
    assert_eq!(app.take_effects(), [Effect::Quit]);
}

#[test]
fn help_opens_with_question_mark_and_closes() {
    let mut app = signed_in();
    app.handle_key(key(KeyCode::Char('?')));
    assert!(matches!(app.dialog, Some(Dialog::Help { .. })));
    // Keys go to the dialog: q does not quit here.
    app.handle_key(key(KeyCode::Char('q')));
    assert_eq!(app.dialog, None);
    assert!(app.take_effects().is_empty());
    app.update(Action::Focus(Pane::Compose));
    app.handle_key(key(KeyCode::F(1)));
    assert!(app.dialog.is_some());
    app.update(Action::CloseDialog);
    assert_eq!(app.dialog, None);
}

#[test]
fn sending_queues_a_pending_message_until_the_server_confirms() {
    let mut app = signed_in();
    open_with_history(&mut app, BOB, vec![]);
    app.take_effects();
    app.update(Action::Focus(Pane::Compose));
    for c in "hi bob".chars() {
        app.handle_key(key(KeyCode::Char(c)));
    }
    app.handle_key(key(KeyCode::Enter));
    assert!(app.compose.draft().is_empty());
    let sent = commands(&app.take_effects());
    let [
        Command::Send(Outgoing {
            to,
            name,
            body,
            client_msg_id,
        }),
    ] = sent.as_slice()
    else {
        panic!("{sent:?}");
    };
    assert_eq!((name.as_str(), body.as_str()), ("bob", "hi bob"));
    assert_eq!(
        *to,
        ChatId::Direct(BOB),
        "addressed by account, not by a name"
    );
    assert_eq!(app.state.outbox.len(), 1);
    app.on_server_event(ServerEvent::SendRetrying {
        client_msg_id: client_msg_id.clone(),
        error: "no server reachable".to_owned(),
        retry_in: Duration::from_secs(2),
    });
    assert!(
        app.state.outbox[0]
            .retrying
            .as_deref()
            .unwrap()
            .contains("retrying in 2s")
    );
    app.on_server_event(ServerEvent::Sent(SentMessage {
        id: 20,
        sent_at: UNIX_EPOCH,
        client_msg_id: client_msg_id.clone(),
    }));
    assert!(app.state.outbox.is_empty());
    assert_eq!(
        app.state.conversations[&ChatId::Direct(BOB)].messages[&20].body,
        "hi bob"
    );
    // The stream's copy of the same message is not shown twice.
    live(&mut app, message(20, ME, BOB, "hi bob"));
    assert_eq!(
        app.state.conversations[&ChatId::Direct(BOB)].messages.len(),
        1
    );
    // Each send has its own key.
    app.update(Action::Send("again".to_owned()));
    let again = commands(&app.take_effects());
    assert!(
        matches!(&again[..], [Command::Send(Outgoing { client_msg_id: other, .. })] if other != client_msg_id)
    );
}

#[test]
fn enter_in_users_opens_the_first_conversation_to_write_in() {
    let mut app = signed_in();
    app.update(Action::Focus(Pane::Users));
    assert_eq!(app.state.selected, None);
    app.handle_key(key(KeyCode::Enter));
    let first = app.state.user_rows()[0].chat;
    assert_eq!(app.state.selected, Some(first));
    assert_eq!(app.state.focus, Pane::Compose);
}

#[test]
fn sending_needs_an_open_conversation_and_keeps_the_draft() {
    let mut app = signed_in();
    app.update(Action::Focus(Pane::Compose));
    app.handle_key(key(KeyCode::Char('x')));
    app.handle_key(key(KeyCode::Enter));
    assert!(commands(&app.take_effects()).is_empty());
    assert_eq!(app.compose.draft(), "x");
    assert!(app.state.last_error.is_some());
    app.handle_key(key(KeyCode::Esc));
    assert_eq!(app.state.last_error, None);
}

#[test]
fn a_refused_send_puts_the_text_back_in_the_draft() {
    let mut app = signed_in();
    open_with_history(&mut app, BOB, vec![]);
    app.update(Action::Send("lost?".to_owned()));
    let id = app.state.outbox[0].client_msg_id.clone();
    app.handle_event(TermEvent::Paste("newer draft".to_owned()));
    app.on_server_event(ServerEvent::SendFailed {
        client_msg_id: id,
        error: "too long".to_owned(),
        gone: false,
    });
    assert!(app.state.outbox.is_empty());
    assert_eq!(app.compose.draft(), "lost?\nnewer draft");
    assert!(
        app.state
            .last_error
            .as_deref()
            .unwrap()
            .contains("too long")
    );
}

#[test]
fn a_deleted_account_s_conversation_says_so_and_takes_nothing_new() {
    let mut app = signed_in();
    open_with_history(&mut app, BOB, vec![message(5, BOB, ME, "bye")]);
    app.update(Action::Send("still there?".to_owned()));
    let id = app.state.outbox[0].client_msg_id.clone();
    app.take_effects();
    // The send went by account id: NOT_FOUND means bob's account is gone,
    // never that someone else now has the name.
    app.on_server_event(ServerEvent::SendFailed {
        client_msg_id: id,
        error: "there is no account with id 2; it may have been deleted".to_owned(),
        gone: true,
    });
    let chat = ChatId::Direct(BOB);
    assert!(app.state.conversations[&chat].deleted);
    assert!(
        app.state
            .last_error
            .as_deref()
            .unwrap()
            .contains("deleted their account")
    );
    assert_eq!(app.compose.draft(), "still there?");
    let row = app
        .state
        .user_rows()
        .into_iter()
        .find(|r| r.chat == chat)
        .unwrap();
    assert!(row.deleted);
    // Nothing more is sent.
    app.update(Action::Send("hello?".to_owned()));
    assert!(app.state.outbox.is_empty());
    assert!(commands(&app.take_effects()).is_empty());
    // Told live, another conversation is marked at once.
    open_with_history(&mut app, CAROL, vec![message(6, CAROL, ME, "hi")]);
    app.on_server_event(ServerEvent::Live(Event::PeerGone {
        id: 20,
        peer_account_id: CAROL,
        peer: "carol".to_owned(),
        conversation_id: 6,
    }));
    assert!(app.state.conversations[&ChatId::Direct(CAROL)].deleted);
    app.take_effects();
    // Its badge clears without telling anyone.
    app.state.conversations.get_mut(&chat).unwrap().unread = 3;
    app.mark_read(chat);
    assert_eq!(app.state.conversations[&chat].unread, 0);
    assert!(commands(&app.take_effects()).is_empty());
}

#[test]
fn pasted_text_goes_into_the_draft_whole() {
    let mut app = signed_in();
    app.handle_event(TermEvent::Paste("line one\r\nline two".to_owned()));
    assert_eq!(app.state.focus, Pane::Compose);
    assert_eq!(app.compose.draft(), "line one\nline two");
    assert!(app.take_effects().is_empty(), "a paste never sends");
}

#[test]
fn the_draft_goes_to_the_editor_and_comes_back() {
    let mut app = signed_in();
    app.handle_event(TermEvent::Paste("draft".to_owned()));
    app.update(Action::Focus(Pane::Compose));
    app.handle_key(KeyEvent::new(KeyCode::Char('e'), KeyModifiers::CONTROL));
    assert_eq!(app.take_effects(), [Effect::EditDraft("draft".to_owned())]);
    app.update(Action::DraftEdited("edited\ntext".to_owned()));
    assert_eq!(app.compose.draft(), "edited\ntext");
}

#[test]
fn a_message_on_screen_is_marked_read_and_one_elsewhere_rings() {
    let mut app = signed_in();
    open_with_history(&mut app, BOB, vec![message(5, BOB, ME, "old")]);
    caught_up(&mut app, 5);
    app.take_effects();
    live(&mut app, message(6, BOB, ME, "on screen"));
    assert_eq!(app.state.conversations[&ChatId::Direct(BOB)].unread, 0);
    assert_eq!(
        commands(&app.take_effects()),
        [
            Command::Ack { up_to: 6 },
            Command::MarkRead {
                chat: ChatId::Direct(BOB),
                up_to: 6
            }
        ]
    );
    live(&mut app, message(7, CAROL, ME, "elsewhere"));
    assert_eq!(app.state.conversations[&ChatId::Direct(CAROL)].unread, 1);
    let effects = app.take_effects();
    assert!(effects.contains(&Effect::Bell));
    assert!(commands(&effects).contains(&Command::Ack { up_to: 7 }));
}

#[test]
fn no_bell_with_no_bell_and_none_for_the_backlog() {
    let mut app = signed_in();
    // The backlog before CaughtUp: counted, not rung, acknowledged once.
    live(&mut app, message(3, CAROL, ME, "while away"));
    live(&mut app, message(4, CAROL, ME, "while away too"));
    let effects = app.take_effects();
    assert!(!effects.contains(&Effect::Bell));
    assert!(commands(&effects).is_empty());
    caught_up(&mut app, 4);
    assert_eq!(commands(&app.take_effects()), [Command::Ack { up_to: 4 }]);
    assert_eq!(app.state.conversations[&ChatId::Direct(CAROL)].unread, 2);
    app.state.notify = crate::state::Notify::Off;
    live(&mut app, message(5, CAROL, ME, "live"));
    assert!(!app.take_effects().contains(&Effect::Bell));
}

#[test]
fn the_conversation_list_counts_what_the_stream_repeats() {
    let mut app = signed_in();
    app.on_server_event(ServerEvent::Conversations(Conversations {
        conversations: vec![Listed {
            peer: "carol".to_owned(),
            peer_account_id: CAROL,
            conversation_id: 1000 + CAROL,
            group: None,
            last_message: Some(message(8, CAROL, ME, "counted")),
            unread: 3,
        }],
        total_unread: 3,
    }));
    // The backlog replays a message the list already counted.
    live(&mut app, message(8, CAROL, ME, "counted"));
    assert_eq!(app.state.conversations[&ChatId::Direct(CAROL)].unread, 3);
    live(&mut app, message(9, CAROL, ME, "new"));
    assert_eq!(app.state.conversations[&ChatId::Direct(CAROL)].unread, 4);
    // A message seen twice is kept once.
    live(&mut app, message(9, CAROL, ME, "new"));
    assert_eq!(app.state.conversations[&ChatId::Direct(CAROL)].unread, 4);
    assert_eq!(
        app.state.conversations[&ChatId::Direct(CAROL)]
            .messages
            .len(),
        2
    );
}

#[test]
fn own_messages_from_elsewhere_appear_without_unread() {
    let mut app = signed_in();
    caught_up(&mut app, 1);
    live(&mut app, message(5, ME, CAROL, "from my phone"));
    let conversation = &app.state.conversations[&ChatId::Direct(CAROL)];
    assert_eq!(conversation.unread, 0);
    assert_eq!(conversation.last_id, 5);
    assert!(!app.take_effects().contains(&Effect::Bell));
}

#[test]
fn receipts_move_the_marks_on_own_messages() {
    let mut app = signed_in();
    open_with_history(
        &mut app,
        BOB,
        vec![message(5, ME, BOB, "a"), message(6, ME, BOB, "b")],
    );
    let receipt = |app: &App, id| {
        let conversation = &app.state.conversations[&ChatId::Direct(BOB)];
        conversation.receipt(&conversation.messages[&id])
    };
    assert_eq!(receipt(&app, 5), Receipt::Sent);
    app.on_server_event(ServerEvent::Live(Event::Delivered {
        id: 7,
        peer: "bob".to_owned(),
        peer_account_id: BOB,
        up_to: 6,
    }));
    assert_eq!(receipt(&app, 6), Receipt::Delivered);
    app.on_server_event(ServerEvent::Live(Event::Read {
        id: 8,
        peer: "bob".to_owned(),
        peer_account_id: BOB,
        up_to: 5,
        conversation_id: 30,
    }));
    assert_eq!(receipt(&app, 5), Receipt::Read);
    assert_eq!(receipt(&app, 6), Receipt::Delivered);
    // History flags count too.
    let mut read = message(9, ME, BOB, "c");
    read.read = true;
    app.on_server_event(ServerEvent::History {
        chat: ChatId::Direct(BOB),
        page: Ok(HistoryPage {
            messages: vec![read],
            next_before: None,
            group_changes: Vec::new(),
        }),
    });
    assert_eq!(receipt(&app, 9), Receipt::Read);
}

#[test]
fn deleting_a_message_asks_first() {
    let mut app = signed_in();
    open_with_history(
        &mut app,
        BOB,
        vec![message(5, BOB, ME, "keep"), message(6, BOB, ME, "drop")],
    );
    app.take_effects();
    app.update(Action::Focus(Pane::Inbox));
    assert_eq!(app.inbox.selected(), Some(6), "the newest is selected");
    app.handle_key(key(KeyCode::Char('d')));
    assert!(
        matches!(&app.dialog, Some(Dialog::ConfirmDelete { id: 6, preview, .. }) if preview == "drop")
    );
    app.handle_key(key(KeyCode::Char('n')));
    assert_eq!(app.dialog, None);
    assert!(app.take_effects().is_empty());
    app.handle_key(key(KeyCode::Char('d')));
    app.handle_key(key(KeyCode::Char('y')));
    assert_eq!(
        commands(&app.take_effects()),
        [Command::DeleteMessages { ids: vec![6] }]
    );
    app.on_server_event(ServerEvent::Deleted { ids: vec![6] });
    assert!(
        !app.state.conversations[&ChatId::Direct(BOB)]
            .messages
            .contains_key(&6)
    );
    assert_eq!(app.inbox.selected(), Some(5));
    // Another session's deletion arrives through the stream.
    app.on_server_event(ServerEvent::Live(Event::Deleted {
        id: 9,
        ids: vec![5],
    }));
    assert!(
        app.state.conversations[&ChatId::Direct(BOB)]
            .messages
            .is_empty()
    );
    app.handle_key(key(KeyCode::Char('d')));
    assert_eq!(app.dialog, None);
    assert!(app.state.last_error.is_some());
}

#[test]
fn message_selection_walks_and_loads_older_at_the_top() {
    let mut app = signed_in();
    app.open(ChatId::Direct(BOB), "bob");
    app.on_server_event(ServerEvent::History {
        chat: ChatId::Direct(BOB),
        page: Ok(HistoryPage {
            messages: vec![message(11, BOB, ME, "b"), message(10, BOB, ME, "a")],
            next_before: Some(10),
            group_changes: Vec::new(),
        }),
    });
    app.take_effects();
    app.update(Action::Focus(Pane::Inbox));
    app.handle_key(key(KeyCode::Char('k')));
    assert_eq!(app.inbox.selected(), Some(10));
    assert_eq!(
        commands(&app.take_effects()),
        [Command::LoadHistory {
            chat: ChatId::Direct(BOB),
            before: Some(10)
        }]
    );
    assert_eq!(
        app.state.conversations[&ChatId::Direct(BOB)].history,
        History::Loading
    );
    app.handle_key(key(KeyCode::Char('G')));
    assert_eq!(app.inbox.selected(), Some(11));
    // A failed page puts the conversation back so it can be tried again.
    app.on_server_event(ServerEvent::History {
        chat: ChatId::Direct(BOB),
        page: Err("unavailable".to_owned()),
    });
    assert_eq!(
        app.state.conversations[&ChatId::Direct(BOB)].history,
        History::More(10)
    );
    assert!(app.state.last_error.is_some());
}

#[test]
fn scrolling_keys_move_the_inbox_and_reaching_the_top_loads_more() {
    let mut app = signed_in();
    app.open(ChatId::Direct(BOB), "bob");
    app.on_server_event(ServerEvent::History {
        chat: ChatId::Direct(BOB),
        page: Ok(HistoryPage {
            messages: vec![message(11, BOB, ME, "b")],
            next_before: Some(11),
            group_changes: Vec::new(),
        }),
    });
    app.take_effects();
    app.update(Action::Focus(Pane::Inbox));
    app.handle_key(key(KeyCode::PageUp));
    assert!(app.inbox.scroll() > 0);
    app.handle_key(key(KeyCode::End));
    assert_eq!(app.inbox.scroll(), 0);
    app.handle_key(key(KeyCode::Home));
    assert!(app.inbox.scroll() > 0);
    app.handle_event(TermEvent::Mouse(MouseEvent {
        kind: MouseEventKind::ScrollDown,
        column: 50,
        row: 5,
        modifiers: KeyModifiers::NONE,
    }));
    // A frame that shows the oldest loaded message asks for older ones.
    let backend = ratatui::backend::TestBackend::new(80, 24);
    let mut terminal = ratatui::Terminal::new(backend).unwrap();
    terminal.draw(|frame| app.draw(frame)).unwrap();
    app.after_draw();
    assert!(
        commands(&app.take_effects()).contains(&Command::LoadHistory {
            chat: ChatId::Direct(BOB),
            before: Some(11)
        })
    );
}

#[test]
fn a_lost_connection_and_a_switch_show_in_the_link() {
    let mut app = signed_in();
    app.on_server_event(ServerEvent::Connection(ConnectionState::Reconnecting {
        server: "b:2".to_owned(),
        attempt: 1,
        next_in: Duration::from_millis(1600),
    }));
    assert_eq!(
        app.state.link,
        Link::Reconnecting {
            server: "b:2".to_owned(),
            next_in: Duration::from_millis(1600)
        }
    );
    app.on_server_event(ServerEvent::Connection(ConnectionState::Connected {
        server: "b:2".to_owned(),
    }));
    assert_eq!(
        app.state.link,
        Link::Connected {
            server: "b:2".to_owned(),
            switched_from: Some("a:1".to_owned())
        }
    );
    app.on_server_event(ServerEvent::Connection(ConnectionState::NoMajority {
        server: "b:2".to_owned(),
    }));
    assert_eq!(
        app.state.link,
        Link::NoMajority {
            server: "b:2".to_owned()
        }
    );
    app.on_server_event(ServerEvent::Connection(ConnectionState::Failed));
    assert_eq!(app.state.link, Link::Failed);
    app.on_server_event(ServerEvent::StreamInterrupted {
        error: "connection reset".to_owned(),
    });
    assert_eq!(app.state.stream_error.as_deref(), Some("connection reset"));
    caught_up(&mut app, 3);
    assert_eq!(app.state.stream_error, None);
}

#[test]
fn an_expired_session_returns_to_sign_in_and_keeps_the_outbox() {
    let mut app = signed_in();
    open_with_history(&mut app, BOB, vec![]);
    app.update(Action::Send("pending".to_owned()));
    let key_before = app.state.outbox[0].client_msg_id.clone();
    app.handle_event(TermEvent::Paste("half written".to_owned()));
    app.take_effects();
    app.on_server_event(ServerEvent::SessionEnded {
        reason: "the session ended after 30m of inactivity; log in again".to_owned(),
    });
    assert_eq!(app.state.screen, Screen::SignIn);
    let notice = app.sign_in.notice().unwrap().to_owned();
    assert!(notice.contains("inactivity"), "{notice}");
    assert!(notice.contains("1 unsent"), "{notice}");
    assert_eq!(app.sign_in.username(), "alice");
    assert_eq!(app.sign_in.focus(), Focus::Password);
    // Back as the same user: the pending send goes again with its key, and
    // the draft is still there.
    app.on_server_event(ServerEvent::SignedIn {
        username: "alice".to_owned(),
        account_id: ME,
        server: "a:1".to_owned(),
    });
    assert!(
        commands(&app.take_effects()).contains(&Command::Send(Outgoing {
            to: ChatId::Direct(BOB),
            name: "bob".to_owned(),
            body: "pending".to_owned(),
            client_msg_id: key_before,
        }))
    );
    app.open(ChatId::Direct(BOB), "bob");
    assert_eq!(app.compose.draft(), "half written");
}

#[test]
fn another_user_signing_in_gets_a_clean_slate() {
    let mut app = signed_in();
    open_with_history(&mut app, BOB, vec![]);
    app.update(Action::Send("alice's".to_owned()));
    app.update(Action::SignOut);
    assert_eq!(
        commands(&app.take_effects()).last(),
        Some(&Command::SignOut)
    );
    app.on_server_event(ServerEvent::SignedOut);
    assert_eq!(app.state.screen, Screen::SignIn);
    assert_eq!(app.sign_in.notice(), Some("You signed out."));
    app.on_server_event(ServerEvent::SignedIn {
        username: "carol".to_owned(),
        account_id: CAROL,
        server: "a:1".to_owned(),
    });
    assert!(app.state.outbox.is_empty());
    assert!(
        !commands(&app.take_effects())
            .iter()
            .any(|c| matches!(c, Command::Send(_)))
    );
}

#[test]
fn deleting_the_account_asks_for_the_password() {
    let mut app = signed_in();
    app.handle_key(key(KeyCode::Char('D')));
    assert!(matches!(app.dialog, Some(Dialog::DeleteAccount { .. })));
    app.handle_event(TermEvent::Paste("pw\n".to_owned()));
    app.handle_key(key(KeyCode::Enter));
    assert_eq!(
        commands(&app.take_effects()),
        [Command::DeleteAccount {
            password: "pw".to_owned()
        }]
    );
    app.on_server_event(ServerEvent::DeleteAccountFailed {
        error: "wrong password; the account was not deleted".to_owned(),
    });
    assert!(matches!(
        &app.dialog,
        Some(Dialog::DeleteAccount { error: Some(e), busy: false, .. }) if e.starts_with("wrong password")
    ));
    app.on_server_event(ServerEvent::AccountDeleted);
    assert_eq!(app.state.screen, Screen::SignIn);
    assert_eq!(app.dialog, None);
    assert_eq!(app.state.me, None);
    assert!(app.sign_in.username().is_empty());
    assert_eq!(app.sign_in.notice(), Some("The account was deleted."));
}

#[test]
fn failures_of_calls_show_in_the_status_bar() {
    let mut app = signed_in();
    app.on_server_event(ServerEvent::Error {
        action: "mark read",
        error: "no quorum".to_owned(),
    });
    assert_eq!(
        app.state.last_error.as_deref(),
        Some("mark read failed: no quorum")
    );
    app.update(Action::Error("local".to_owned()));
    assert_eq!(app.state.last_error.as_deref(), Some("local"));
    app.update(Action::DismissError);
    assert_eq!(app.state.last_error, None);
}

#[test]
fn key_releases_are_ignored() {
    let mut app = signed_in();
    let mut release = key(KeyCode::Char('q'));
    release.kind = KeyEventKind::Release;
    app.handle_key(release);
    assert!(app.take_effects().is_empty());
}

/// A group is a conversation of its own: its row, its messages and its
/// receipts never land in a direct conversation with one of its members.
#[test]
fn group_conversations_are_not_mistaken_for_direct_ones() {
    let mut app = signed_in();
    let group = Listed {
        peer: String::new(),
        peer_account_id: 0,
        conversation_id: 77,
        group: Some(chat_client::GroupSummary {
            title: "team".to_owned(),
            owner_account_id: BOB,
            member_count: 3,
        }),
        last_message: Some(message(12, BOB, 0, "in the group")),
        unread: 1,
    };
    app.on_server_event(ServerEvent::Conversations(Conversations {
        conversations: vec![group],
        total_unread: 1,
    }));
    assert!(!app.state.conversations.contains_key(&ChatId::Direct(0)));
    let team = &app.state.conversations[&ChatId::Group(77)];
    assert_eq!((team.name.as_str(), team.unread), ("team", 1));
    caught_up(&mut app, 12);
    let mut posted = message(13, CAROL, 0, "also in the group");
    posted.in_group = true;
    posted.conversation_id = 77;
    live(&mut app, posted);
    assert!(
        !app.state.conversations.contains_key(&ChatId::Direct(CAROL)),
        "a group message is not a direct one from its sender"
    );
    assert_eq!(app.state.conversations[&ChatId::Group(77)].unread, 2);
    live(&mut app, message(14, BOB, ME, "direct"));
    app.on_server_event(ServerEvent::Live(Event::Read {
        id: 15,
        peer: "bob".to_owned(),
        peer_account_id: BOB,
        up_to: 14,
        conversation_id: 77,
    }));
    assert_eq!(
        app.state.conversations[&ChatId::Direct(BOB)].read_up_to,
        0,
        "a group's receipt"
    );
    let rows = app.state.user_rows();
    let chats: Vec<ChatId> = rows.iter().map(|r| r.chat).collect();
    assert_eq!(chats[..2], [ChatId::Direct(BOB), ChatId::Group(77)]);
    assert_eq!(rows[1].members, Some(3));
}

const TEAM: u64 = 77;

fn group_change(
    id: MessageId,
    kind: GroupChangeKind,
    by: AccountId,
    accounts: &[AccountId],
) -> ServerEvent {
    ServerEvent::Live(Event::Group {
        id,
        change: GroupChange {
            id,
            kind,
            conversation_id: TEAM,
            title: "team".to_owned(),
            by: name(by).to_owned(),
            by_account_id: by,
            accounts: (accounts.iter())
                .map(|a| (*a, name(*a).to_owned()))
                .collect(),
            new_owner: None,
        },
    })
}

fn group_message(id: MessageId, from: AccountId, body: &str) -> Message {
    let mut m = message(id, from, 0, body);
    m.in_group = true;
    m.conversation_id = TEAM;
    m.to = String::new();
    m
}

fn member(id: AccountId, owner: bool) -> ConversationMember {
    ConversationMember {
        account_id: id,
        username: name(id).to_owned(),
        owner,
        admin: false,
        joined_at: 0,
        read_up_to: 0,
        delivered_up_to: 0,
        online: false,
    }
}

/// Alice, caught up, in group "team" (owned by her, with bob and carol),
/// opened with its members and an empty history.
fn in_open_group() -> App {
    let mut app = signed_in();
    caught_up(&mut app, 9);
    app.on_server_event(group_change(
        10,
        GroupChangeKind::Created,
        ME,
        &[BOB, CAROL],
    ));
    app.open(ChatId::Group(TEAM), "team");
    app.on_server_event(ServerEvent::Members {
        group: TEAM,
        members: Ok(ConversationMembers {
            title: "team".to_owned(),
            members: vec![member(ME, true), member(BOB, false), member(CAROL, false)],
        }),
    });
    app.on_server_event(ServerEvent::History {
        chat: ChatId::Group(TEAM),
        page: Ok(HistoryPage {
            messages: Vec::new(),
            next_before: None,
            group_changes: Vec::new(),
        }),
    });
    app.take_effects();
    app
}

#[test]
fn a_group_is_made_from_its_dialog_and_opened() {
    let mut app = signed_in();
    app.handle_key(key(KeyCode::Char('n')));
    assert!(matches!(app.dialog, Some(Dialog::Group(_))));
    assert!(app.is_typing(), "q is a letter of the title");
    for c in "team".chars() {
        app.handle_key(key(KeyCode::Char(c)));
    }
    app.handle_key(key(KeyCode::Enter));
    app.handle_key(key(KeyCode::Char('b')));
    assert_eq!(
        commands(&app.take_effects()),
        [Command::Complete {
            prefix: "b".to_owned()
        }]
    );
    app.on_server_event(ServerEvent::Completions {
        prefix: "b".to_owned(),
        accounts: vec![account(BOB)],
    });
    app.handle_key(key(KeyCode::Tab));
    app.handle_key(key(KeyCode::Enter));
    assert_eq!(
        commands(&app.take_effects()),
        [Command::CreateGroup {
            title: "team".to_owned(),
            members: vec![BOB],
        }]
    );
    // A refusal shows in the dialog, which stays.
    app.on_server_event(ServerEvent::GroupNotCreated {
        error: "a title is 1 to 64 characters".to_owned(),
    });
    assert!(app.dialog.is_some());
    assert_eq!(app.state.last_error, None);
    app.handle_key(key(KeyCode::Enter));
    app.take_effects();
    app.on_server_event(ServerEvent::GroupCreated {
        group: TEAM,
        title: "team".to_owned(),
    });
    assert!(app.dialog.is_none());
    assert_eq!(app.state.selected, Some(ChatId::Group(TEAM)));
    assert_eq!(app.state.focus, Pane::Compose);
    let asked = commands(&app.take_effects());
    assert!(
        asked.contains(&Command::LoadMembers { group: TEAM }),
        "{asked:?}"
    );
    assert!(
        asked.contains(&Command::LoadHistory {
            chat: ChatId::Group(TEAM),
            before: None
        }),
        "{asked:?}"
    );
}

#[test]
fn group_messages_count_unread_and_are_read_as_a_group() {
    let mut app = signed_in();
    caught_up(&mut app, 9);
    app.on_server_event(group_change(
        10,
        GroupChangeKind::Created,
        BOB,
        &[ME, CAROL],
    ));
    let team = &app.state.conversations[&ChatId::Group(TEAM)];
    assert_eq!((team.name.as_str(), team.unread), ("team", 0));
    assert_eq!(team.group.as_ref().map(|g| g.member_count), Some(3));
    live(&mut app, group_message(11, CAROL, "hi all"));
    assert_eq!(app.state.conversations[&ChatId::Group(TEAM)].unread, 1);
    assert!(app.take_effects().contains(&Effect::Bell));
    assert!(!app.state.conversations.contains_key(&ChatId::Direct(CAROL)));
    app.open(ChatId::Group(TEAM), "team");
    app.on_server_event(ServerEvent::History {
        chat: ChatId::Group(TEAM),
        page: Ok(HistoryPage {
            messages: vec![group_message(11, CAROL, "hi all")],
            next_before: None,
            group_changes: Vec::new(),
        }),
    });
    assert!(commands(&app.take_effects()).contains(&Command::MarkRead {
        chat: ChatId::Group(TEAM),
        up_to: 11
    }));
    // Sending goes to the group by its id.
    app.update(Action::Send("hello team".to_owned()));
    let sent = commands(&app.take_effects());
    assert!(
        matches!(
            &sent[..],
            [Command::Send(Outgoing {
                to: ChatId::Group(TEAM),
                ..
            })]
        ),
        "{sent:?}"
    );
}

#[test]
fn group_changes_go_into_the_timeline_and_the_member_list() {
    let mut app = in_open_group();
    app.on_server_event(group_change(12, GroupChangeKind::Renamed, ME, &[]));
    app.on_server_event(group_change(13, GroupChangeKind::Left, CAROL, &[]));
    let team = &app.state.conversations[&ChatId::Group(TEAM)];
    let group = team.group.as_ref().unwrap();
    assert_eq!(group.member_count, 2);
    assert!(group.member(CAROL).is_none());
    assert_eq!(
        group.changes.keys().copied().collect::<Vec<_>>(),
        [10, 12, 13]
    );
    // Alice's message: read by bob once he says so.
    live(&mut app, group_message(14, ME, "just us"));
    let receipt = |app: &App| {
        let team = &app.state.conversations[&ChatId::Group(TEAM)];
        team.receipt(&team.messages[&14])
    };
    assert_eq!(receipt(&app), Receipt::Sent);
    app.on_server_event(ServerEvent::Live(Event::Read {
        id: 15,
        peer: "bob".to_owned(),
        peer_account_id: BOB,
        up_to: 14,
        conversation_id: TEAM,
    }));
    assert_eq!(receipt(&app), Receipt::ReadByAll);
    // Bob removes alice: the group leaves her list and she is told.
    app.on_server_event(group_change(16, GroupChangeKind::OwnerChanged, ME, &[BOB]));
    app.on_server_event(group_change(17, GroupChangeKind::Removed, BOB, &[ME]));
    assert!(!app.state.conversations.contains_key(&ChatId::Group(TEAM)));
    assert_eq!(app.state.selected, None);
    assert!(
        (app.state.last_error.as_deref()).is_some_and(|e| e.contains("bob removed you")),
        "{:?}",
        app.state.last_error
    );
}

#[test]
fn the_members_pane_asks_before_removing_and_leaving() {
    let mut app = in_open_group();
    app.handle_key(key(KeyCode::Char('m')));
    assert!(app.state.members_shown());
    assert_eq!(app.state.focus, Pane::Members);
    // Alice (the owner) is first; one down is bob.
    app.handle_key(key(KeyCode::Char('j')));
    app.handle_key(key(KeyCode::Char('d')));
    assert!(matches!(&app.dialog, Some(Dialog::Confirm { text, .. }) if text.contains("bob")));
    app.handle_key(key(KeyCode::Char('n')));
    assert!(app.dialog.is_none());
    assert!(commands(&app.take_effects()).is_empty());
    app.handle_key(key(KeyCode::Char('d')));
    app.handle_key(key(KeyCode::Char('y')));
    assert_eq!(
        commands(&app.take_effects()),
        [Command::ChangeGroup {
            group: TEAM,
            edit: GroupEdit::Remove(BOB)
        }]
    );
    app.handle_key(key(KeyCode::Char('x')));
    app.handle_key(key(KeyCode::Enter));
    assert_eq!(
        commands(&app.take_effects()),
        [Command::ChangeGroup {
            group: TEAM,
            edit: GroupEdit::Leave
        }]
    );
    // Tab goes through the members pane while it shows; m hides it.
    app.update(Action::Focus(Pane::Inbox));
    app.handle_key(key(KeyCode::Tab));
    assert_eq!(app.state.focus, Pane::Members);
    app.handle_key(key(KeyCode::Char('m')));
    assert!(!app.state.members_shown());
    assert_eq!(app.state.focus, Pane::Inbox);
    app.handle_key(key(KeyCode::Tab));
    assert_eq!(app.state.focus, Pane::Compose);
}

#[test]
fn the_list_keeps_its_order_under_the_cursor() {
    let mut app = signed_in();
    caught_up(&mut app, 9);
    live(&mut app, message(10, BOB, ME, "b"));
    live(&mut app, message(11, CAROL, ME, "c"));
    let order =
        |app: &App| -> Vec<String> { app.state.user_rows().into_iter().map(|r| r.name).collect() };
    assert_eq!(order(&app), ["carol", "bob"]);
    app.handle_key(key(KeyCode::Char('j')));
    app.handle_key(key(KeyCode::Char('j')));
    assert_eq!(app.state.highlight, Some(ChatId::Direct(BOB)));
    // Bob writes again: he would go first, but not while the cursor moves.
    live(&mut app, message(12, BOB, ME, "again"));
    assert_eq!(order(&app), ["carol", "bob"]);
    app.handle_key(key(KeyCode::Char('k')));
    assert_eq!(app.state.highlight, Some(ChatId::Direct(CAROL)));
    // Leaving the pane puts it back in order.
    app.handle_key(key(KeyCode::Tab));
    assert_eq!(order(&app), ["bob", "carol"]);
}

#[test]
fn the_last_row_is_the_last_account_not_the_last_loaded() {
    let mut app = signed_in();
    app.on_server_event(ServerEvent::Accounts {
        pattern: "*".to_owned(),
        appended: false,
        page: AccountPage {
            accounts: vec![account(BOB), account(CAROL)],
            next_page_token: Some("p2".to_owned()),
        },
    });
    app.handle_key(key(KeyCode::Char('G')));
    assert_eq!(
        commands(&app.take_effects()),
        [Command::ListAccounts {
            pattern: "*".to_owned(),
            page_token: Some("p2".to_owned())
        }]
    );
    let page = |names: &[(AccountId, &str)], next: Option<&str>| ServerEvent::Accounts {
        pattern: "*".to_owned(),
        appended: true,
        page: AccountPage {
            accounts: (names.iter())
                .map(|(id, n)| Account {
                    username: (*n).to_owned(),
                    ..account(*id)
                })
                .collect(),
            next_page_token: next.map(str::to_owned),
        },
    };
    app.on_server_event(page(&[(4, "dee")], Some("p3")));
    assert_eq!(
        commands(&app.take_effects()),
        [Command::ListAccounts {
            pattern: "*".to_owned(),
            page_token: Some("p3".to_owned())
        }]
    );
    app.on_server_event(page(&[(5, "eve")], None));
    assert_eq!(app.state.highlight, Some(ChatId::Direct(5)));
    assert_eq!(app.state.selected, None);
}

#[test]
fn a_read_receipt_goes_only_for_what_shows() {
    let mut app = signed_in();
    caught_up(&mut app, 9);
    open_with_history(&mut app, BOB, vec![message(5, BOB, ME, "old")]);
    app.take_effects();
    // The terminal lost the focus: the message is unread, marked new.
    app.handle_event(TermEvent::FocusLost);
    live(&mut app, message(10, BOB, ME, "while away"));
    let effects = app.take_effects();
    assert!(
        !commands(&effects)
            .iter()
            .any(|c| matches!(c, Command::MarkRead { .. }))
    );
    let bob = &app.state.conversations[&ChatId::Direct(BOB)];
    assert_eq!((bob.unread, bob.new_marker), (1, Some(10)));
    app.handle_event(TermEvent::FocusGained);
    assert_eq!(
        commands(&app.take_effects()),
        [Command::MarkRead {
            chat: ChatId::Direct(BOB),
            up_to: 10
        }]
    );
    // Scrolled up, the newest does not show: read once scrolled back.
    app.update(Action::Scroll(Scroll::Up(3)));
    app.take_effects();
    live(&mut app, message(11, BOB, ME, "below the window"));
    assert!(
        !commands(&app.take_effects())
            .iter()
            .any(|c| matches!(c, Command::MarkRead { .. }))
    );
    assert_eq!(app.state.conversations[&ChatId::Direct(BOB)].unread, 1);
    app.update(Action::Scroll(Scroll::Bottom));
    assert_eq!(
        commands(&app.take_effects()),
        [Command::MarkRead {
            chat: ChatId::Direct(BOB),
            up_to: 11
        }]
    );
}

#[test]
fn a_conversation_opens_at_its_first_unread() {
    let mut app = signed_in();
    app.on_server_event(ServerEvent::Conversations(Conversations {
        conversations: vec![Listed {
            peer: "bob".to_owned(),
            peer_account_id: BOB,
            conversation_id: 1000 + BOB,
            group: None,
            last_message: Some(message(300, BOB, ME, "newest")),
            unread: 150,
        }],
        total_unread: 150,
    }));
    app.open(ChatId::Direct(BOB), "bob");
    app.take_effects();
    let page =
        |ids: std::ops::RangeInclusive<MessageId>, next: Option<MessageId>| ServerEvent::History {
            chat: ChatId::Direct(BOB),
            page: Ok(HistoryPage {
                messages: ids.rev().map(|id| message(id, BOB, ME, "m")).collect(),
                next_before: next,
                group_changes: Vec::new(),
            }),
        };
    // The first page holds 100 of the 150 unread: the next is asked for.
    app.on_server_event(page(201..=300, Some(201)));
    assert_eq!(
        commands(&app.take_effects()),
        [Command::LoadHistory {
            chat: ChatId::Direct(BOB),
            before: Some(201)
        }]
    );
    assert_eq!(
        app.state.conversations[&ChatId::Direct(BOB)].new_marker,
        None
    );
    app.on_server_event(page(101..=200, Some(101)));
    let bob = &app.state.conversations[&ChatId::Direct(BOB)];
    assert_eq!(bob.new_marker, Some(151), "above the 150th newest");
    assert!(commands(&app.take_effects()).contains(&Command::MarkRead {
        chat: ChatId::Direct(BOB),
        up_to: 300
    }));
}

#[test]
fn slash_starts_a_new_filter_and_the_next_action_clears_a_stale_error() {
    let mut app = signed_in();
    app.handle_key(key(KeyCode::Char('/')));
    app.handle_key(key(KeyCode::Char('c')));
    app.handle_key(key(KeyCode::Enter));
    assert_eq!(app.state.directory.pattern, "c");
    app.take_effects();
    // `/` again: a new filter, not more of the old one.
    app.handle_key(key(KeyCode::Char('/')));
    assert_eq!(app.state.directory.pattern, "");
    app.handle_key(key(KeyCode::Char('b')));
    assert_eq!(app.state.directory.pattern, "b");
    assert!(
        commands(&app.take_effects()).contains(&Command::ListAccounts {
            pattern: "*b*".to_owned(),
            page_token: None
        })
    );
    app.handle_key(key(KeyCode::Esc));
    assert_eq!(app.state.directory.pattern, "");
    // An error stays until the user does something else.
    app.on_server_event(ServerEvent::Error {
        action: "mark read",
        error: "no server reachable".to_owned(),
    });
    assert!(app.state.last_error.is_some());
    app.handle_key(key(KeyCode::Char('j')));
    assert_eq!(app.state.last_error, None);
}

#[test]
fn mentions_mark_the_row_and_notify_even_when_muted() {
    let mut app = signed_in();
    caught_up(&mut app, 9);
    app.state.notify = crate::state::Notify::Desktop;
    // Muting carol (z on her row) is remembered.
    app.state.highlight = Some(ChatId::Direct(CAROL));
    app.update(Action::Focus(Pane::Users));
    app.handle_key(key(KeyCode::Char('z')));
    assert!(
        app.take_effects()
            .contains(&Effect::SaveMuted(vec![ChatId::Direct(CAROL)]))
    );
    live(&mut app, message(10, CAROL, ME, "lunch?"));
    assert!(
        !app.take_effects()
            .iter()
            .any(|e| matches!(e, Effect::Notify { .. })),
        "muted"
    );
    live(&mut app, message(11, CAROL, ME, "@Alice, lunch?"));
    let effects = app.take_effects();
    assert!(
        effects.contains(&Effect::Notify {
            title: "carol".to_owned(),
            body: "@Alice, lunch?".to_owned()
        }),
        "{effects:?}"
    );
    let row = &app.state.user_rows()[0];
    assert!(row.mentioned && row.muted && row.unread == 2, "{row:?}");
    // Opening it clears the mark.
    app.open(ChatId::Direct(CAROL), "carol");
    assert!(!app.state.conversations[&ChatId::Direct(CAROL)].mentioned);
    // Only a whole name is a mention.
    assert!(super::mentions("hi @alice.", "alice"));
    assert!(!super::mentions("hi @alice2", "alice"));
    assert!(!super::mentions("mail bob@alice", "alice"));
}

#[test]
fn jump_anywhere_with_the_switcher_alt_digits_and_commands() {
    let mut app = signed_in();
    caught_up(&mut app, 9);
    live(&mut app, message(10, BOB, ME, "b"));
    live(&mut app, message(11, CAROL, ME, "c"));
    // Ctrl+K, a few letters, Enter: carol's conversation, ready to write.
    app.handle_key(KeyEvent::new(KeyCode::Char('k'), KeyModifiers::CONTROL));
    assert!(matches!(app.dialog, Some(Dialog::Switcher(_))));
    for c in "crl".chars() {
        app.handle_key(key(KeyCode::Char(c)));
    }
    app.handle_key(key(KeyCode::Enter));
    assert_eq!(app.state.selected, Some(ChatId::Direct(CAROL)));
    assert_eq!(app.state.focus, Pane::Compose);
    assert!(app.dialog.is_none());
    // Alt+2: the second conversation of the list (carol is first now: newest).
    app.handle_key(KeyEvent::new(KeyCode::Char('2'), KeyModifiers::ALT));
    assert_eq!(app.state.selected, Some(ChatId::Direct(BOB)));
    // `:` works where keys are commands, not in compose.
    app.update(Action::Focus(Pane::Inbox));
    app.handle_key(key(KeyCode::Char(':')));
    for c in "dm carol".chars() {
        app.handle_key(key(KeyCode::Char(c)));
    }
    app.handle_key(key(KeyCode::Enter));
    assert_eq!(app.state.selected, Some(ChatId::Direct(CAROL)));
    // A name the client has not loaded is asked of the server.
    app.update(Action::RunCommand("dm zed".to_owned()));
    assert!(commands(&app.take_effects()).contains(&Command::Complete {
        prefix: "zed".to_owned()
    }));
    app.on_server_event(ServerEvent::Completions {
        prefix: "zed".to_owned(),
        accounts: vec![Account {
            username: "zedd".to_owned(),
            ..account(9)
        }],
    });
    assert_eq!(
        app.state.last_error.as_deref(),
        Some("no account is named zed")
    );
    app.update(Action::RunCommand("frobnicate".to_owned()));
    assert!(
        (app.state.last_error.as_deref()).is_some_and(|e| e.contains(":dm NAME")),
        "{:?}",
        app.state.last_error
    );
    app.update(Action::RunCommand("quit".to_owned()));
    assert!(app.take_effects().contains(&Effect::Quit));
}

#[test]
fn a_saved_session_is_resumed_and_forgotten_when_it_ends() {
    let mut app = App::new(AppConfig::default());
    app.resume(vec!["a:1".to_owned()]);
    assert_eq!(commands(&app.take_effects()), [Command::Resume]);
    assert!(app.sign_in.is_busy());
    // The server no longer knows it: back to the form, which says why.
    app.on_server_event(ServerEvent::SignInFailed {
        field: None,
        message: "the saved session has ended: sign in".to_owned(),
    });
    assert!(!app.sign_in.is_busy());
    assert_eq!(app.sign_in.notice(), None, "no longer resuming");
    assert_eq!(app.state.screen, Screen::SignIn);
    // A session that ends, or a logout, forgets what was saved.
    let mut app = signed_in();
    app.on_server_event(ServerEvent::SessionEnded {
        reason: "idle".to_owned(),
    });
    assert!(app.take_effects().contains(&Effect::ForgetSession));
    let mut app = signed_in();
    app.on_server_event(ServerEvent::SignedOut);
    assert!(app.take_effects().contains(&Effect::ForgetSession));
}

#[test]
fn search_asks_the_server_goes_on_and_jumps_to_a_result_in_context() {
    let mut app = signed_in();
    // Ctrl+F with nothing open says what to do.
    app.handle_key(KeyEvent::new(KeyCode::Char('f'), KeyModifiers::CONTROL));
    assert!(app.dialog.is_none());
    assert!(
        app.state
            .last_error
            .as_deref()
            .unwrap()
            .contains("open a conversation")
    );

    // Only the newest page is loaded: 300 and 301.
    app.open(ChatId::Direct(BOB), name(BOB));
    app.on_server_event(ServerEvent::History {
        chat: ChatId::Direct(BOB),
        page: Ok(HistoryPage {
            messages: vec![message(301, BOB, ME, "latest"), message(300, ME, BOB, "x")],
            next_before: Some(300),
            group_changes: Vec::new(),
        }),
    });
    app.take_effects();
    app.handle_key(KeyEvent::new(KeyCode::Char('f'), KeyModifiers::CONTROL));
    assert!(matches!(app.dialog, Some(Dialog::Search(_))));
    for c in "Launch".chars() {
        app.handle_key(key(KeyCode::Char(c)));
    }
    app.handle_key(key(KeyCode::Enter));
    let search = |before| Command::Search {
        chat: ChatId::Direct(BOB),
        query: "Launch".to_owned(),
        before,
    };
    assert_eq!(commands(&app.take_effects()), [search(None)]);
    // The server examined part of the history: fewer matches than a page,
    // and where to go on. The dialog asks again by itself.
    app.on_server_event(ServerEvent::Found {
        chat: ChatId::Direct(BOB),
        query: "Launch".to_owned(),
        page: Ok(HistoryPage {
            messages: vec![message(250, BOB, ME, "the launch is at ten")],
            next_before: Some(200),
            group_changes: Vec::new(),
        }),
    });
    assert_eq!(commands(&app.take_effects()), [search(Some(200))]);
    // An answer to an older query is dropped.
    app.on_server_event(ServerEvent::Found {
        chat: ChatId::Direct(BOB),
        query: "other".to_owned(),
        page: Ok(HistoryPage {
            messages: vec![message(7, BOB, ME, "other")],
            next_before: None,
            group_changes: Vec::new(),
        }),
    });
    app.on_server_event(ServerEvent::Found {
        chat: ChatId::Direct(BOB),
        query: "Launch".to_owned(),
        page: Ok(HistoryPage {
            messages: vec![message(12, ME, BOB, "LAUNCH day")],
            next_before: None,
            group_changes: Vec::new(),
        }),
    });
    assert!(
        commands(&app.take_effects()).is_empty(),
        "the whole history was searched"
    );
    let Some(Dialog::Search(dialog)) = &app.dialog else {
        panic!("the search dialog stays open");
    };
    let found: Vec<MessageId> = dialog.results.iter().map(|m| m.id).collect();
    assert_eq!(found, [250, 12]);

    // Down, Enter: message 12 is on no loaded page; older pages load until
    // it is, then it is selected.
    app.handle_key(key(KeyCode::Down));
    app.handle_key(key(KeyCode::Enter));
    assert!(app.dialog.is_none());
    assert_eq!(app.state.focus, Pane::Inbox);
    assert_eq!(
        commands(&app.take_effects()),
        [Command::LoadHistory {
            chat: ChatId::Direct(BOB),
            before: Some(300)
        }]
    );
    app.on_server_event(ServerEvent::History {
        chat: ChatId::Direct(BOB),
        page: Ok(HistoryPage {
            messages: vec![message(250, BOB, ME, "the launch is at ten")],
            next_before: Some(250),
            group_changes: Vec::new(),
        }),
    });
    assert_eq!(
        commands(&app.take_effects()),
        [Command::LoadHistory {
            chat: ChatId::Direct(BOB),
            before: Some(250)
        }]
    );
    assert_eq!(
        app.state.conversations[&ChatId::Direct(BOB)].jump_to,
        Some(12)
    );
    app.on_server_event(ServerEvent::History {
        chat: ChatId::Direct(BOB),
        page: Ok(HistoryPage {
            messages: vec![message(12, ME, BOB, "LAUNCH day")],
            next_before: None,
            group_changes: Vec::new(),
        }),
    });
    assert_eq!(app.inbox.selected(), Some(12));

    // `:search TEXT` starts at once; a query the server would refuse is
    // refused here, without a call.
    app.update(Action::RunCommand("search ten".to_owned()));
    assert_eq!(
        commands(&app.take_effects()),
        [Command::Search {
            chat: ChatId::Direct(BOB),
            query: "ten".to_owned(),
            before: None
        }]
    );
    app.update(Action::CloseDialog);
    app.update(Action::OpenSearch("x".repeat(300)));
    assert!(commands(&app.take_effects()).is_empty());
    let Some(Dialog::Search(dialog)) = &app.dialog else {
        panic!("the search dialog is open");
    };
    assert!(matches!(
        dialog.progress,
        crate::components::search::Progress::Failed(_)
    ));
}

fn presence(app: &mut App, full: bool, online: &[AccountId], offline: &[AccountId]) {
    app.on_server_event(ServerEvent::Live(Event::Presence {
        full,
        online: online.to_vec(),
        offline: offline.to_vec(),
    }));
}

fn dot(app: &App, id: AccountId) -> Option<bool> {
    (app.state.user_rows().into_iter())
        .find(|r| r.chat == ChatId::Direct(id))
        .and_then(|r| r.online)
}

#[test]
fn presence_news_moves_the_dots_and_a_full_list_replaces_them() {
    let mut app = signed_in();
    caught_up(&mut app, 9);
    // The directory's own flags do not count: only the stream's news.
    assert_eq!(dot(&app, BOB), Some(false));
    presence(&mut app, true, &[BOB, CAROL], &[]);
    assert_eq!((dot(&app, BOB), dot(&app, CAROL)), (Some(true), Some(true)));
    presence(&mut app, false, &[], &[CAROL]);
    assert_eq!(
        (dot(&app, BOB), dot(&app, CAROL)),
        (Some(true), Some(false))
    );
    // After a resume, the full list is all there is.
    presence(&mut app, true, &[CAROL], &[]);
    assert_eq!(
        (dot(&app, BOB), dot(&app, CAROL)),
        (Some(false), Some(true))
    );
    // Signing out forgets it all.
    app.on_server_event(ServerEvent::SignedOut);
    assert!(app.state.online.is_empty());
}

#[test]
fn new_accounts_appear_in_the_directory_where_they_sort_and_deleted_ones_go() {
    let mut app = signed_in();
    caught_up(&mut app, 9);
    let new = |id: AccountId, name: &str| Account {
        username: name.to_owned(),
        ..account(id)
    };
    app.on_server_event(ServerEvent::Live(Event::Directory {
        created: vec![new(7, "Beth"), new(8, "zed")],
        deleted: vec![CAROL],
    }));
    let names: Vec<String> = (app.state.directory.accounts.iter())
        .map(|a| a.username.clone())
        .collect();
    assert_eq!(names, ["alice", "Beth", "bob", "zed"]);
    // With a filter, only what matches; past the loaded pages, nothing
    // (the next page brings it).
    app.on_server_event(ServerEvent::Accounts {
        pattern: "*".to_owned(),
        appended: false,
        page: AccountPage {
            accounts: vec![account(ME), account(BOB)],
            next_page_token: Some("p2".to_owned()),
        },
    });
    app.on_server_event(ServerEvent::Live(Event::Directory {
        created: vec![new(9, "amy"), new(10, "zoe")],
        deleted: vec![],
    }));
    let names: Vec<String> = (app.state.directory.accounts.iter())
        .map(|a| a.username.clone())
        .collect();
    assert_eq!(names, ["alice", "amy", "bob"]);
    // Nothing was asked of the server for it.
    assert!(commands(&app.take_effects()).is_empty());
}

#[test]
fn a_resumed_stream_lists_the_directory_again() {
    let mut app = signed_in();
    caught_up(&mut app, 9);
    assert!(commands(&app.take_effects()).is_empty());
    // The stream broke and resumed: what was created meanwhile is not news.
    caught_up(&mut app, 12);
    assert_eq!(
        commands(&app.take_effects()),
        [Command::ListAccounts {
            pattern: "*".to_owned(),
            page_token: None
        }]
    );
}
