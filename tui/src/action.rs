//! The vocabulary between the parts of the UI: [`Action`]s are what a key
//! (or a pane) asks the app to do; [`Effect`]s are what the app asks the
//! outside world to do (the client task, the terminal, the config file).
//! What goes to and comes from the client task is in
//! [`message`](crate::message).

use chat_client::{AccountId, GroupEdit, MessageId};

use crate::message::{Command, SignInRequest};
use crate::state::Pane;

/// A step through a list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Move {
    /// One up (older, in the inbox).
    Up,
    /// One down (newer, in the inbox).
    Down,
    /// A page up.
    PageUp,
    /// A page down.
    PageDown,
    /// To the first.
    First,
    /// To the last.
    Last,
}

/// A scroll of the inbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scroll {
    /// Toward older messages by this many lines.
    Up(usize),
    /// Toward newer messages by this many lines.
    Down(usize),
    /// A page toward older messages.
    PageUp,
    /// A page toward newer messages.
    PageDown,
    /// To the oldest loaded message (older ones load as it gets there).
    Top,
    /// To the newest message.
    Bottom,
}

/// Something the user asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Leave the program.
    Quit,
    /// Focus the next pane (Tab).
    FocusNext,
    /// Focus the previous pane (Shift+Tab).
    FocusPrev,
    /// Focus a given pane.
    Focus(Pane),
    /// Write to the selected user (Enter in Users), opening the first
    /// conversation when none is open yet.
    WriteToSelected,
    /// Open the help dialog.
    ShowHelp,
    /// Close the open dialog.
    CloseDialog,
    /// Clear the error shown in the status bar.
    DismissError,
    /// Sign in with the form's values.
    SignIn(SignInRequest),
    /// Move the users selection (which opens that conversation).
    MoveSelection(Move),
    /// Start typing a filter after `/`.
    StartFilter,
    /// The filter text changed.
    SetFilter(String),
    /// Stop typing the filter, keeping it.
    EndFilter,
    /// Drop the filter.
    ClearFilter,
    /// Load the directory again from its first page (accounts created
    /// since).
    RefreshDirectory,
    /// Scroll the inbox.
    Scroll(Scroll),
    /// Move the selected message of the inbox.
    MoveMessage(Move),
    /// Ask to delete the selected message.
    AskDeleteMessage,
    /// Delete this message (confirmed).
    DeleteMessage(MessageId),
    /// Send this text to the open conversation.
    Send(String),
    /// Edit the draft in `$EDITOR`.
    EditDraft,
    /// The draft came back from `$EDITOR`.
    DraftEdited(String),
    /// Ask to delete the account.
    AskDeleteAccount,
    /// Delete the account with this password (confirmed).
    DeleteAccount(String),
    /// Close the session and go back to sign-in.
    SignOut,
    /// Show or hide the members of the open group.
    ToggleMembers,
    /// Move the selection of the members pane.
    MoveMember(Move),
    /// Open the dialog that makes a group.
    AskNewGroup,
    /// Make a group (from its dialog).
    CreateGroup {
        /// The title.
        title: String,
        /// The other members.
        members: Vec<AccountId>,
    },
    /// Open the dialog that adds members to the open group.
    AskAddMembers,
    /// Open the dialog that renames the open group.
    AskRename,
    /// Ask whether to remove this member from the open group.
    AskRemoveMember(AccountId),
    /// Ask whether to hand the open group on to this member.
    AskNewOwner(AccountId),
    /// Make this member an admin of the open group, or a plain member again.
    ToggleAdmin(AccountId),
    /// Ask whether to leave the open group.
    AskLeave,
    /// Change the open group (confirmed where it asks).
    ChangeGroup(GroupEdit),
    /// Show who read the selected message of a group.
    ShowReaders,
    /// A name is being typed: offer accounts that start with it.
    Complete(String),
    /// Mute the conversation under the Users cursor, or unmute it.
    ToggleMute,
    /// Open the switcher (Ctrl+K).
    OpenSwitcher,
    /// Open the command line (`:`).
    OpenCommandLine,
    /// Open this conversation (from the switcher) and write.
    OpenChat(crate::state::ChatId, String),
    /// Open the Nth conversation of the list (Alt+1..9), from 0.
    OpenNth(usize),
    /// Run a command typed after `:`.
    RunCommand(String),
    /// Search the open conversation (Ctrl+F), starting with this text.
    OpenSearch(String),
    /// Ask the server for matches of `query` in `chat` below `before`.
    Search {
        /// The conversation.
        chat: crate::state::ChatId,
        /// What to look for.
        query: String,
        /// Where the last call stopped; `None` from the newest.
        before: Option<MessageId>,
    },
    /// Show this message in its conversation (a search result).
    JumpTo(crate::state::ChatId, MessageId),
    /// Show an error in the status bar.
    Error(String),
}

/// Something the app needs done outside itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Hand a command to the client task.
    Command(Command),
    /// Ring the terminal bell.
    Bell,
    /// Show a desktop notification through the terminal.
    Notify {
        /// Who wrote, and where.
        title: String,
        /// What they wrote.
        body: String,
    },
    /// Delete the saved session: it ended, or the user logged out.
    ForgetSession,
    /// Remember these conversations as muted.
    SaveMuted(Vec<crate::state::ChatId>),
    /// Open `$EDITOR` on this draft; the result comes back as
    /// [`Action::DraftEdited`].
    EditDraft(String),
    /// Remember the server list and username for next time.
    Remember {
        /// The servers.
        servers: Vec<String>,
        /// The username.
        username: String,
    },
    /// Leave the program.
    Quit,
}
