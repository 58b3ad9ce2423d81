//! Snapshot tests of every screen and dialog, drawn into ratatui's
//! `TestBackend` at 80x24 and 120x40 and compared with the snapshots in
//! `tests/snapshots/`. The text is compared; colours are left out, so the
//! screens must make sense without them (as with `NO_COLOR`).

use std::time::{Duration, UNIX_EPOCH};

use chat_client::{
    Account, AccountId, AccountPage, ConnectionState, Conversation, ConversationMember,
    ConversationMembers, Conversations, Event, GroupChange, GroupChangeKind, GroupSummary,
    HistoryPage, Message, MessageId, SentMessage,
};
use chat_tui::action::Action;
use chat_tui::app::{App, AppConfig};
use chat_tui::message::{Command, Field, Outgoing, ServerEvent};
use chat_tui::state::{ChatId, Pane};
use crossterm::event::{Event as TermEvent, KeyCode, KeyEvent, KeyModifiers};
use ratatui::Terminal;
use ratatui::backend::TestBackend;

const ME: AccountId = 1;
const BOB: AccountId = 2;

/// Draws `app` at both sizes and compares each with its snapshot.
fn check(name: &str, app: &App) {
    for (width, height) in [(80, 24), (120, 40)] {
        let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
        terminal.draw(|frame| app.draw(frame)).unwrap();
        insta::assert_snapshot!(format!("{name}_{width}x{height}"), terminal.backend());
    }
}

fn key(code: KeyCode) -> TermEvent {
    TermEvent::Key(KeyEvent::new(code, KeyModifiers::NONE))
}

fn message(id: MessageId, from: (AccountId, &str), to: (AccountId, &str), body: &str) -> Message {
    Message {
        id,
        from: from.1.to_owned(),
        from_account_id: from.0,
        to: to.1.to_owned(),
        to_account_id: to.0,
        body: body.to_owned(),
        // 2023-11-14 22:13 UTC onwards, a minute apart.
        sent_at: UNIX_EPOCH + Duration::from_secs(1_700_000_000 + id * 60),
        delivered: false,
        read: false,
        conversation_id: 0,
        in_group: false,
        read_by: 0,
        readers: 1,
    }
}

fn account(id: AccountId, name: &str, online: bool) -> Account {
    Account {
        username: name.to_owned(),
        account_id: id,
        created_at: UNIX_EPOCH,
        online,
    }
}

fn sign_in_screen() -> App {
    App::new(AppConfig {
        servers: vec!["127.0.0.1:50051".to_owned(), "127.0.0.1:50052".to_owned()],
        username: Some("alice".to_owned()),
        ..AppConfig::default()
    })
}

/// Signed in as alice with `accounts` in the directory and `conversations`.
fn signed_in(accounts: Vec<Account>, conversations: Vec<Conversation>) -> App {
    let mut app = sign_in_screen();
    app.on_server_event(ServerEvent::SignedIn {
        username: "alice".to_owned(),
        account_id: ME,
        server: "127.0.0.1:50051".to_owned(),
    });
    // Presence comes on the stream; here, for whoever the test has online.
    let online = (accounts.iter().filter(|a| a.online))
        .map(|a| a.account_id)
        .collect();
    app.on_server_event(ServerEvent::Accounts {
        pattern: "*".to_owned(),
        appended: false,
        page: AccountPage {
            accounts,
            next_page_token: None,
        },
    });
    let total_unread = conversations.iter().map(|c| c.unread).sum();
    app.on_server_event(ServerEvent::Conversations(Conversations {
        conversations,
        total_unread,
    }));
    app.on_server_event(ServerEvent::Live(Event::CaughtUp { id: 1 }));
    app.on_server_event(ServerEvent::Live(Event::Presence {
        full: true,
        online,
        offline: Vec::new(),
    }));
    app.take_effects();
    app
}

/// A conversation with bob: long messages, wide characters and emoji, a
/// "new" marker, receipts, and sends still pending.
fn conversation_with_bob() -> App {
    let bob = (BOB, "bob");
    let me = (ME, "alice");
    let mut app = signed_in(
        vec![
            account(ME, "alice", true),
            account(BOB, "bob", true),
            account(3, "carol", false),
        ],
        vec![Conversation {
            peer: "bob".to_owned(),
            peer_account_id: BOB,
            conversation_id: 30,
            group: None,
            last_message: Some(message(16, bob, me, "")),
            unread: 2,
        }],
    );
    app.handle_event(key(KeyCode::Char('j')));
    app.handle_event(key(KeyCode::Enter));
    app.update(Action::Focus(Pane::Users));
    let mut read = message(
        10,
        me,
        bob,
        "Did you get the figures for the report? I need them before the meeting tomorrow morning, ideally with the regional breakdown and last year's numbers next to them so we can compare.",
    );
    read.read = true;
    read.delivered = true;
    let mut delivered = message(12, me, bob, "ok 👍");
    delivered.delivered = true;
    let history = vec![
        message(
            16,
            bob,
            me,
            "Also: the café on the corner has ☕ for 2€ today.",
        ),
        message(
            15,
            bob,
            me,
            "日本語のテキストも大丈夫です。折り返しも正しく表示されるはずです。",
        ),
        message(
            13,
            me,
            bob,
            "And a second line\nwith a break\n\nand a blank one.",
        ),
        delivered,
        message(
            11,
            bob,
            me,
            "Yes, attached.\tTabs and \u{1b}[31mescapes\u{1b}[0m are shown safely.",
        ),
        read,
    ];
    app.on_server_event(ServerEvent::History {
        chat: ChatId::Direct(BOB),
        page: Ok(HistoryPage {
            messages: history,
            next_before: None,
            group_changes: Vec::new(),
        }),
    });
    app.update(Action::Send("on its way".to_owned()));
    app.update(Action::Send("this one is stuck".to_owned()));
    let effects = app.take_effects();
    let stuck = effects
        .iter()
        .rev()
        .find_map(|e| match e {
            chat_tui::action::Effect::Command(Command::Send(Outgoing {
                client_msg_id, ..
            })) => Some(client_msg_id.clone()),
            _ => None,
        })
        .unwrap();
    app.on_server_event(ServerEvent::SendRetrying {
        client_msg_id: stuck,
        error: "no server reachable".to_owned(),
        retry_in: Duration::from_secs(4),
    });
    app
}

#[test]
fn sign_in() {
    check("sign_in", &sign_in_screen());
}

#[test]
fn sign_in_with_errors() {
    let mut app = sign_in_screen();
    app.on_server_event(ServerEvent::SessionEnded {
        reason: "ignored on the sign-in screen".to_owned(),
    });
    app.handle_event(key(KeyCode::Char('x')));
    // Signing in with the password typed: the session that ends now is the
    // one being opened.
    app.handle_event(key(KeyCode::Enter));
    app.on_server_event(ServerEvent::SessionEnded {
        reason: "the session ended after 30m of inactivity; log in again".to_owned(),
    });
    app.on_server_event(ServerEvent::SignInFailed {
        field: Some(Field::Password),
        message: "wrong username or password".to_owned(),
    });
    app.on_server_event(ServerEvent::SignInFailed {
        field: Some(Field::Servers),
        message: "no server reachable (tried 127.0.0.1:50051, 127.0.0.1:50052)".to_owned(),
    });
    check("sign_in_errors", &app);
}

#[test]
fn creating_an_account() {
    let mut app = sign_in_screen();
    app.handle_event(TermEvent::Key(KeyEvent::new(
        KeyCode::Char('t'),
        KeyModifiers::CONTROL,
    )));
    // The password, Enter, the password again, Enter.
    for _ in 0..2 {
        for c in "correct horse".chars() {
            app.handle_event(key(KeyCode::Char(c)));
        }
        app.handle_event(key(KeyCode::Enter));
    }
    check("sign_in_creating", &app);
}

#[test]
fn empty_directory() {
    check(
        "main_empty_directory",
        &signed_in(vec![account(ME, "alice", true)], vec![]),
    );
}

#[test]
fn no_conversation_open() {
    let app = signed_in(
        vec![
            account(ME, "alice", true),
            account(BOB, "bob", true),
            account(3, "carol", false),
        ],
        vec![],
    );
    check("main_nothing_open", &app);
}

#[test]
fn conversation() {
    check("main_conversation", &conversation_with_bob());
}

#[test]
fn conversation_with_a_selected_message_and_a_switched_server() {
    let mut app = conversation_with_bob();
    app.update(Action::Focus(Pane::Inbox));
    app.handle_event(key(KeyCode::Char('k')));
    app.handle_event(key(KeyCode::Char('k')));
    app.on_server_event(ServerEvent::Connection(ConnectionState::Connected {
        server: "127.0.0.1:50052".to_owned(),
    }));
    check("main_selected_message", &app);
}

#[test]
fn writes_wait_without_a_majority() {
    let mut app = conversation_with_bob();
    app.on_server_event(ServerEvent::Connection(ConnectionState::NoMajority {
        server: "127.0.0.1:50051".to_owned(),
    }));
    check("main_writes_wait", &app);
}

#[test]
fn searching_a_conversation() {
    let mut app = conversation_with_bob();
    app.update(Action::OpenSearch("launch".to_owned()));
    let me = (1, "alice");
    let bob = (2, "bob");
    app.on_server_event(ServerEvent::Found {
        chat: ChatId::Direct(BOB),
        query: "launch".to_owned(),
        page: Ok(HistoryPage {
            messages: vec![
                message(40, bob, me, "Is the LAUNCH still on for Friday, or do we wait for the weather report?"),
                message(22, me, bob, "launch checklist attached"),
                message(9, bob, me, "a very long message that talks about many things before it finally mentions the launch at the end"),
            ],
            next_before: Some(9),
            group_changes: Vec::new(),
        }),
    });
    check("search", &app);
}

#[test]
fn scrolled_up_in_a_long_conversation() {
    let me = (ME, "alice");
    let bob = (BOB, "bob");
    let mut app = signed_in(vec![account(BOB, "bob", false)], vec![]);
    app.open(ChatId::Direct(BOB), "bob");
    let messages = (1..=300)
        .rev()
        .map(|i| {
            let (from, to) = if i % 3 == 0 { (me, bob) } else { (bob, me) };
            message(i + 1, from, to, &format!("message number {i}"))
        })
        .collect();
    app.on_server_event(ServerEvent::History {
        chat: ChatId::Direct(BOB),
        page: Ok(HistoryPage {
            messages,
            next_before: Some(2),
            group_changes: Vec::new(),
        }),
    });
    app.update(Action::Focus(Pane::Inbox));
    app.handle_event(key(KeyCode::PageUp));
    app.handle_event(key(KeyCode::PageUp));
    app.on_server_event(ServerEvent::Connection(ConnectionState::Reconnecting {
        server: "127.0.0.1:50052".to_owned(),
        attempt: 3,
        next_in: Duration::from_millis(400),
    }));
    check("main_scrolled_reconnecting", &app);
}

#[test]
fn many_unread_conversations() {
    let names = [
        "bob",
        "carol",
        "dave",
        "erin",
        "frank",
        "grace",
        "heidi",
        "ivan",
        "judy",
        "mallory",
        "niaj",
        "olivia",
        "peggy",
        "rupert",
        "sybil",
        "trent",
        "victor",
        "walter",
        "xavier",
        "yolanda",
        "zoe",
        "a.very.long.username_32_bytes_xx",
    ];
    let me = (ME, "alice");
    let conversations = names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let id = 10 + i as u64;
            Conversation {
                peer: (*name).to_owned(),
                peer_account_id: id,
                conversation_id: 1000 + id,
                group: None,
                last_message: Some(message(100 + id, (id, name), me, "hi")),
                unread: if i % 4 == 3 {
                    0
                } else {
                    (i as u64 * 7) % 1200 + 1
                },
            }
        })
        .collect();
    let accounts = names
        .iter()
        .enumerate()
        .map(|(i, name)| account(10 + i as u64, name, i % 2 == 0))
        .collect();
    let mut app = signed_in(accounts, conversations);
    app.on_server_event(ServerEvent::Error {
        action: "mark read",
        error: "no quorum: try again in a moment".to_owned(),
    });
    check("main_many_unread", &app);
}

#[test]
fn filtering_users() {
    let mut app = signed_in(
        vec![account(BOB, "bob", true), account(3, "bobby", false)],
        vec![],
    );
    app.handle_event(key(KeyCode::Char('/')));
    for c in "bo*".chars() {
        app.handle_event(key(KeyCode::Char(c)));
    }
    app.on_server_event(ServerEvent::Accounts {
        pattern: "bo*".to_owned(),
        appended: false,
        page: AccountPage {
            accounts: vec![account(BOB, "bob", true), account(3, "bobby", false)],
            next_page_token: Some("more".to_owned()),
        },
    });
    check("main_filter", &app);
}

#[test]
fn compose_near_the_limit() {
    let mut app = conversation_with_bob();
    app.update(Action::Focus(Pane::Compose));
    let long = "Lorem ipsum dolor sit amet. ".repeat(500);
    app.handle_event(TermEvent::Paste(format!("first line\n{long}")));
    check("main_compose_counter", &app);
    app.handle_event(TermEvent::Paste(" ".repeat(3000)));
    check("main_compose_too_long", &app);
}

#[test]
fn help_dialog() {
    let mut app = conversation_with_bob();
    app.handle_event(key(KeyCode::Char('?')));
    check("dialog_help", &app);
}

#[test]
fn confirm_delete_dialog() {
    let mut app = conversation_with_bob();
    app.update(Action::Focus(Pane::Inbox));
    app.handle_event(key(KeyCode::Char('d')));
    check("dialog_delete_message", &app);
}

#[test]
fn delete_account_dialog() {
    let mut app = conversation_with_bob();
    app.handle_event(key(KeyCode::Char('D')));
    for c in "not-it".chars() {
        app.handle_event(key(KeyCode::Char(c)));
    }
    app.handle_event(key(KeyCode::Enter));
    app.on_server_event(ServerEvent::DeleteAccountFailed {
        error: "wrong password; the account was not deleted".to_owned(),
    });
    check("dialog_delete_account", &app);
}

#[test]
fn a_sent_message_replaces_its_pending_line() {
    let mut app = conversation_with_bob();
    let pending = app.state.outbox[0].client_msg_id.clone();
    app.on_server_event(ServerEvent::Sent(SentMessage {
        id: 17,
        sent_at: UNIX_EPOCH + Duration::from_secs(1_700_000_000 + 17 * 60),
        client_msg_id: pending,
    }));
    app.on_server_event(ServerEvent::Live(Event::Delivered {
        id: 18,
        peer: "bob".to_owned(),
        peer_account_id: BOB,
        up_to: 17,
    }));
    check("main_sent", &app);
}

#[test]
fn a_terminal_too_small() {
    let app = sign_in_screen();
    let mut terminal = Terminal::new(TestBackend::new(30, 8)).unwrap();
    terminal.draw(|frame| app.draw(frame)).unwrap();
    insta::assert_snapshot!("too_small_30x8", terminal.backend());
}

const CAROL: AccountId = 3;
const TEAM: u64 = 77;

fn member(id: AccountId, name: &str, read_up_to: MessageId, owner: bool) -> ConversationMember {
    ConversationMember {
        account_id: id,
        username: name.to_owned(),
        owner,
        admin: false,
        joined_at: 0,
        read_up_to,
        delivered_up_to: read_up_to,
        online: id != CAROL,
    }
}

fn change(
    id: MessageId,
    kind: GroupChangeKind,
    by: (AccountId, &str),
    accounts: &[(AccountId, &str)],
) -> GroupChange {
    GroupChange {
        id,
        kind,
        conversation_id: TEAM,
        title: "launch crew".to_owned(),
        by: by.1.to_owned(),
        by_account_id: by.0,
        accounts: (accounts.iter())
            .map(|(id, name)| (*id, (*name).to_owned()))
            .collect(),
        new_owner: None,
    }
}

/// Alice in the group "launch crew" with bob and carol: its changes in the
/// timeline among the messages, each message with its sender, her own with
/// "read by N of M".
fn group_conversation() -> App {
    let me = (ME, "alice");
    let bob = (BOB, "bob");
    let carol = (CAROL, "carol");
    let in_group = |mut m: Message| {
        m.in_group = true;
        m.conversation_id = TEAM;
        m.to = String::new();
        m.to_account_id = 0;
        m
    };
    let mut app = signed_in(
        vec![
            account(ME, "alice", true),
            account(BOB, "bob", true),
            account(CAROL, "carol", false),
        ],
        vec![Conversation {
            peer: String::new(),
            peer_account_id: 0,
            conversation_id: TEAM,
            group: Some(GroupSummary {
                title: "launch crew".to_owned(),
                owner_account_id: ME,
                member_count: 3,
            }),
            last_message: Some(in_group(message(14, carol, me, ""))),
            unread: 1,
        }],
    );
    app.handle_event(key(KeyCode::Char('j')));
    app.handle_event(key(KeyCode::Enter));
    app.update(Action::Focus(Pane::Users));
    app.on_server_event(ServerEvent::Members {
        group: TEAM,
        members: Ok(ConversationMembers {
            title: "launch crew".to_owned(),
            members: vec![
                member(ME, "alice", 14, true),
                member(BOB, "bob", 13, false),
                member(CAROL, "carol", 11, false),
            ],
        }),
    });
    app.on_server_event(ServerEvent::History {
        chat: ChatId::Group(TEAM),
        page: Ok(HistoryPage {
            messages: vec![
                in_group(message(14, carol, me, "I'm in. Friday works for me.")),
                in_group(message(13, me, bob, "Shall we meet on Friday?")),
                in_group(message(11, me, bob, "Welcome, both of you!")),
            ],
            next_before: None,
            group_changes: vec![
                change(12, GroupChangeKind::Renamed, me, &[]),
                change(10, GroupChangeKind::Created, me, &[bob, carol]),
            ],
        }),
    });
    app
}

#[test]
fn a_group_conversation() {
    check("main_group", &group_conversation());
}

#[test]
fn a_group_with_its_members() {
    let mut app = group_conversation();
    app.handle_event(key(KeyCode::Char('m')));
    app.handle_event(key(KeyCode::Char('j')));
    check("main_group_members", &app);
}

#[test]
fn who_read_a_group_message() {
    let mut app = group_conversation();
    app.update(Action::Focus(Pane::Inbox));
    // The newest is selected; one up is alice's "Shall we meet on Friday?".
    app.handle_event(key(KeyCode::Char('k')));
    app.handle_event(key(KeyCode::Char('r')));
    check("dialog_readers", &app);
}

#[test]
fn new_group_dialog() {
    let mut app = signed_in(
        vec![
            account(ME, "alice", true),
            account(BOB, "bob", true),
            account(CAROL, "carol", false),
        ],
        vec![],
    );
    app.handle_event(key(KeyCode::Char('n')));
    for c in "launch crew".chars() {
        app.handle_event(key(KeyCode::Char(c)));
    }
    app.handle_event(key(KeyCode::Enter));
    app.handle_event(key(KeyCode::Char('b')));
    app.on_server_event(ServerEvent::Completions {
        prefix: "b".to_owned(),
        accounts: vec![account(BOB, "bob", true)],
    });
    app.handle_event(key(KeyCode::Tab));
    app.handle_event(key(KeyCode::Char('c')));
    app.on_server_event(ServerEvent::Completions {
        prefix: "c".to_owned(),
        accounts: vec![account(CAROL, "carol", false), account(9, "cyd", false)],
    });
    check("dialog_new_group", &app);
}

#[test]
fn a_conversation_opens_at_its_first_unread() {
    let bob = (BOB, "bob");
    let me = (ME, "alice");
    let mut app = signed_in(
        vec![account(BOB, "bob", false)],
        vec![Conversation {
            peer: "bob".to_owned(),
            peer_account_id: BOB,
            conversation_id: 30,
            group: None,
            last_message: Some(message(100, bob, me, "")),
            unread: 40,
        }],
    );
    app.open(ChatId::Direct(BOB), "bob");
    // Ten minutes apart, so each has its header.
    let messages = (1..=100)
        .rev()
        .map(|i| {
            let mut m = message(i, bob, me, &format!("message number {i}"));
            m.sent_at = UNIX_EPOCH + Duration::from_secs(1_700_000_000 + i * 600);
            m
        })
        .collect();
    app.on_server_event(ServerEvent::History {
        chat: ChatId::Direct(BOB),
        page: Ok(HistoryPage {
            messages,
            next_before: None,
            group_changes: Vec::new(),
        }),
    });
    check("main_first_unread", &app);
}

/// Home goes to the very beginning: the window stays at the top while the
/// older pages load, and says so once it is there.
#[test]
fn home_reaches_the_beginning_of_the_conversation() {
    let bob = (BOB, "bob");
    let me = (ME, "alice");
    let mut app = signed_in(vec![account(BOB, "bob", false)], vec![]);
    app.open(ChatId::Direct(BOB), "bob");
    let page =
        |ids: std::ops::RangeInclusive<MessageId>, next: Option<MessageId>| ServerEvent::History {
            chat: ChatId::Direct(BOB),
            page: Ok(HistoryPage {
                messages: (ids.rev())
                    .map(|i| message(i, bob, me, &format!("number {i}")))
                    .collect(),
                next_before: next,
                group_changes: Vec::new(),
            }),
        };
    app.on_server_event(page(101..=200, Some(101)));
    app.update(Action::Focus(Pane::Inbox));
    app.handle_event(key(KeyCode::Home));
    let mut terminal = Terminal::new(TestBackend::new(80, 24)).unwrap();
    let mut frame = |app: &mut App| {
        terminal.draw(|frame| app.draw(frame)).unwrap();
        app.after_draw();
        format!("{}", terminal.backend())
    };
    let first = frame(&mut app);
    assert!(first.contains("number 101"), "{first}");
    let asked = app.take_effects();
    assert!(
        asked.contains(&chat_tui::action::Effect::Command(Command::LoadHistory {
            chat: ChatId::Direct(BOB),
            before: Some(101)
        })),
        "{asked:?}"
    );
    app.on_server_event(page(1..=100, None));
    let screen = frame(&mut app);
    assert!(screen.contains("beginning of the conversation"), "{screen}");
    assert!(screen.contains("number 1 "), "{screen}");
}

#[test]
fn the_switcher() {
    let mut app = group_conversation();
    app.handle_event(TermEvent::Key(KeyEvent::new(
        KeyCode::Char('k'),
        KeyModifiers::CONTROL,
    )));
    app.handle_event(key(KeyCode::Char('c')));
    app.on_server_event(ServerEvent::Completions {
        prefix: "c".to_owned(),
        accounts: vec![account(CAROL, "carol", false), account(9, "cyd", false)],
    });
    check("dialog_switcher", &app);
}
