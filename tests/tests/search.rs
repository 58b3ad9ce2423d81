//! Searching a conversation's history on the server (`History` with a
//! `query`): what matches, in which order, paging to the end within the
//! per-call budget, who may find what, and the refusals.

mod common;

use chat_proto as pb;
use chat_server::SearchBudget;
use common::*;
use pb::change_group_request::Change;
use tonic::Code;

/// One search call in the conversation `with` (a username, or a group
/// when `with` is empty and `group` is set).
#[derive(Debug, Clone, Default)]
struct Search<'a> {
    token: &'a str,
    peer: &'a str,
    group: u64,
    query: &'a str,
    before: u64,
    limit: u32,
}

impl Search<'_> {
    async fn call(&self, c: &mut Client) -> Result<pb::HistoryResponse, tonic::Status> {
        c.history(pb::HistoryRequest {
            token: self.token.into(),
            peer: self.peer.into(),
            conversation_id: self.group,
            query: self.query.into(),
            before: self.before,
            limit: self.limit,
            ..Default::default()
        })
        .await
        .map(|r| r.into_inner())
    }

    /// Every call from `before` on until `next_before` is 0: the bodies of
    /// each page (so a test sees where the budget cut), newest first.
    async fn pages(&self, c: &mut Client) -> Vec<Vec<String>> {
        let mut pages = Vec::new();
        let mut call = self.clone();
        loop {
            let page = call.call(c).await.expect("search");
            assert!(page.group_events.is_empty(), "{:?}", page.group_events);
            let ids: Vec<u64> = page.messages.iter().map(|m| m.id).collect();
            assert!(ids.windows(2).all(|w| w[0] > w[1]), "newest first: {ids:?}");
            if call.before != 0 {
                assert!(ids.iter().all(|id| *id < call.before), "{ids:?}");
            }
            pages.push(page.messages.into_iter().map(|m| m.body).collect());
            if page.next_before == 0 {
                return pages;
            }
            assert!(
                pages.len() < 1000,
                "a search that never ends: next_before {}",
                page.next_before
            );
            call.before = page.next_before;
        }
    }

    /// Every match, over every call.
    async fn all(&self, c: &mut Client) -> Vec<String> {
        self.pages(c).await.concat()
    }
}

/// A search of the direct conversation with `peer`, at the default limit.
fn direct<'a>(token: &'a str, peer: &'a str, query: &'a str) -> Search<'a> {
    Search {
        token,
        peer,
        query,
        ..Default::default()
    }
}

async fn create_group(c: &mut Client, token: &str, names: &[&str]) -> u64 {
    c.create_group(pb::CreateGroupRequest {
        token: token.into(),
        title: "plans".into(),
        member_names: names.iter().map(|n| n.to_string()).collect(),
        client_request_id: "plans".into(),
        ..Default::default()
    })
    .await
    .expect("create group")
    .into_inner()
    .conversation_id
}

async fn post(c: &mut Client, token: &str, group: u64, body: &str) -> u64 {
    c.send(pb::SendRequest {
        token: token.into(),
        conversation_id: group,
        body: body.into(),
        client_msg_id: format!("{group}-{body}"),
        ..Default::default()
    })
    .await
    .expect("post")
    .into_inner()
    .message_id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_ignores_case_and_pages_newest_first_through_every_match() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let ann = account(&mut c, "ann").await;
    let bob = account(&mut c, "bob").await;
    let said = [
        (&ann, "bob", "so ein Ärger heute"),
        (&bob, "ann", "hello there"),
        (&ann, "bob", "what ärger?"),
        (&bob, "ann", "nothing to see"),
        (&bob, "ann", "ÄRGER! Hello again"),
        (&ann, "bob", "arger is not ärger"),
        (&bob, "ann", "HELLO, HeLLo, hello"),
        (&ann, "bob", "fine 🙂 OK"),
    ];
    for (token, to, body) in said {
        send(&mut c, token, to, body).await;
    }

    // Both sides find the same, newest first, whatever the query's case.
    let ärger = [
        "arger is not ärger",
        "ÄRGER! Hello again",
        "what ärger?",
        "so ein Ärger heute",
    ];
    for (token, peer, query) in [
        (&ann, "bob", "ÄRGER"),
        (&bob, "ann", "ärger"),
        (&ann, "bob", "äRgEr"),
    ] {
        let found = direct(token, peer, query).all(&mut c).await;
        assert_eq!(found, ärger, "{query}");
    }
    let hello = ["HELLO, HeLLo, hello", "ÄRGER! Hello again", "hello there"];
    assert_eq!(direct(&bob, "ann", "Hello").all(&mut c).await, hello);
    assert_eq!(
        direct(&ann, "bob", "🙂 ok").all(&mut c).await,
        ["fine 🙂 OK"]
    );
    assert!(direct(&ann, "bob", "nowhere").all(&mut c).await.is_empty());

    // A page at a time: each match exactly once, in order.
    let one_a_call = Search {
        limit: 1,
        ..direct(&ann, "bob", "ärger")
    };
    let pages = one_a_call.pages(&mut c).await;
    assert_eq!(pages.concat(), ärger);
    assert!(pages.iter().all(|p| p.len() <= 1), "{pages:?}");
    let three = Search {
        limit: 3,
        ..direct(&ann, "bob", "e")
    };
    let pages = three.pages(&mut c).await;
    let with_e: Vec<&str> = (said.iter().rev())
        .map(|(_, _, body)| *body)
        .filter(|b| b.to_lowercase().contains('e'))
        .collect();
    assert_eq!(pages.concat(), with_e);
    assert_eq!(pages[0].len(), 3);

    // A search starts below `before`, like History.
    let newest = one_a_call.call(&mut c).await.unwrap();
    let below = Search {
        before: newest.next_before,
        ..direct(&ann, "bob", "ärger")
    };
    assert_eq!(below.all(&mut c).await, ärger[1..]);

    // Without a query History is what it was: every message, and a page
    // of one says where the next starts.
    let everything = Search {
        limit: 1,
        ..direct(&ann, "bob", "")
    };
    let page = everything.call(&mut c).await.unwrap();
    assert_eq!(page.messages[0].body, "fine 🙂 OK");
    assert_eq!(page.next_before, page.messages[0].id);
}

/// A conversation longer than one call's budget: the only match is its
/// first message, and paging on from `next_before` reaches it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_pages_past_the_budget_to_a_match_at_the_very_beginning() {
    let tmp = tempfile::tempdir().unwrap();
    let mut config = config(tmp.path());
    config.search_budget = SearchBudget {
        messages: 10,
        ..SearchBudget::default()
    };
    let server = TestServer::start_with(config).await;
    let mut c = server.client().await;
    let ann = account(&mut c, "ann").await;
    let _bob = account(&mut c, "bob").await;
    send(&mut c, &ann, "bob", "the Needle in the haystack").await;
    for i in 1..=35 {
        send(&mut c, &ann, "bob", &format!("hay {i}")).await;
    }
    let search = Search {
        token: &ann,
        peer: "bob",
        query: "needle",
        ..Default::default()
    };
    // 36 messages, 10 a call: three calls find nothing but go on, the
    // fourth finds it and ends.
    let pages = search.pages(&mut c).await;
    assert_eq!(
        pages,
        [
            vec![],
            vec![],
            vec![],
            vec!["the Needle in the haystack".to_owned()]
        ]
    );
    let first = search.call(&mut c).await.unwrap();
    assert!(first.messages.is_empty());
    assert_ne!(first.next_before, 0);

    // A limit reached before the budget stops at the last match.
    let hay = Search {
        query: "HAY ",
        limit: 4,
        ..search.clone()
    };
    let page = hay.call(&mut c).await.unwrap();
    let bodies: Vec<&str> = page.messages.iter().map(|m| m.body.as_str()).collect();
    assert_eq!(bodies, ["hay 35", "hay 34", "hay 33", "hay 32"]);
    assert_eq!(page.next_before, page.messages[3].id);
    assert_eq!(hay.all(&mut c).await.len(), 35);
    server.stop().await;
}

/// A member finds only what History shows it: in a group, messages since
/// it joined; anywhere, not the ones it deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_finds_only_what_the_caller_sees() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let ann = account(&mut c, "ann").await;
    let bob = account(&mut c, "bob").await;
    let cat = account(&mut c, "cat").await;
    let group = create_group(&mut c, &ann, &["bob"]).await;
    post(&mut c, &ann, group, "the secret plan").await;
    let cat_id = login(&mut c, "cat").await.account_id;
    c.change_group(pb::ChangeGroupRequest {
        token: ann.clone(),
        conversation_id: group,
        change: Some(Change::Add(pb::AccountIds { ids: vec![cat_id] })),
        ..Default::default()
    })
    .await
    .expect("add cat");
    post(&mut c, &bob, group, "the public PLAN").await;
    let plans = |token| Search {
        token,
        group,
        query: "plan",
        ..Default::default()
    };
    assert_eq!(
        plans(&ann).all(&mut c).await,
        ["the public PLAN", "the secret plan"]
    );
    assert_eq!(plans(&cat).all(&mut c).await, ["the public PLAN"]);

    // Deleted for me: gone from my search, not from the others'.
    let secret = plans(&bob).call(&mut c).await.unwrap().messages[1].id;
    c.delete_messages(pb::DeleteMessagesRequest {
        token: bob.clone(),
        ids: vec![secret],
        ..Default::default()
    })
    .await
    .expect("delete");
    assert_eq!(plans(&bob).all(&mut c).await, ["the public PLAN"]);
    assert_eq!(plans(&ann).all(&mut c).await.len(), 2);

    // The same in a direct conversation.
    let sent = send(&mut c, &ann, "bob", "plan B").await;
    send(&mut c, &ann, "bob", "plan C").await;
    c.delete_messages(pb::DeleteMessagesRequest {
        token: ann.clone(),
        ids: vec![sent.message_id],
        ..Default::default()
    })
    .await
    .expect("delete");
    assert_eq!(direct(&ann, "bob", "PLAN").all(&mut c).await, ["plan C"]);
    let found = direct(&bob, "ann", "PLAN").all(&mut c).await;
    assert_eq!(found, ["plan C", "plan B"]);
    // No conversation yet: nothing to find.
    assert!(direct(&cat, "bob", "PLAN").all(&mut c).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_refusals_say_the_rule() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let ann = account(&mut c, "ann").await;
    let bob = account(&mut c, "bob").await;
    let cat = account(&mut c, "cat").await;
    send(&mut c, &ann, "bob", "hello").await;
    let group = create_group(&mut c, &ann, &["bob"]).await;
    let ok = Search {
        token: &ann,
        peer: "bob",
        query: "hello",
        ..Default::default()
    };

    // 256 bytes is the most, counted in bytes, not characters.
    let longest = "ä".repeat(128);
    let found = Search {
        query: &longest,
        ..ok.clone()
    };
    assert!(found.call(&mut c).await.unwrap().messages.is_empty());
    let too_long = format!("{longest}x");
    let refused = Search {
        query: &too_long,
        ..ok.clone()
    }
    .call(&mut c)
    .await
    .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert!(refused.message().contains("1 to 256 bytes"), "{refused:?}");
    assert!(!refused.message().contains("ää"), "the query is not echoed");

    for limit in [1001, u32::MAX] {
        let refused = Search {
            limit,
            ..ok.clone()
        }
        .call(&mut c)
        .await
        .unwrap_err();
        assert_eq!(refused.code(), Code::InvalidArgument);
        assert!(refused.message().contains("at most 1000"), "{refused:?}");
    }
    assert_eq!(
        Search {
            limit: 1000,
            ..ok.clone()
        }
        .call(&mut c)
        .await
        .unwrap()
        .messages
        .len(),
        1
    );

    // Not a member, no such conversation, no such peer, no session.
    for (token, group) in [(&cat, group), (&bob, 999_999_999)] {
        let refused = Search {
            token,
            peer: "",
            group,
            ..ok.clone()
        }
        .call(&mut c)
        .await
        .unwrap_err();
        assert_eq!(refused.code(), Code::NotFound, "{refused:?}");
    }
    let refused = Search {
        peer: "nobody",
        ..ok.clone()
    };
    assert_eq!(
        refused.call(&mut c).await.unwrap_err().code(),
        Code::NotFound
    );
    let refused = Search {
        peer: "",
        ..ok.clone()
    };
    assert_eq!(
        refused.call(&mut c).await.unwrap_err().code(),
        Code::InvalidArgument
    );
    let refused = Search {
        token: "not-a-token",
        ..ok.clone()
    };
    assert_eq!(
        refused.call(&mut c).await.unwrap_err().code(),
        Code::Unauthenticated
    );
}
