//! The vocabulary between the parts of the UI: [`Action`]s are what a key
//! (or a pane) asks the app to do; [`Effect`]s are what the app asks the
//! outside world to do (the client task, the terminal, the config file).
//! What goes to and comes from the client task is in
//! [`message`](crate::message).

use chat_client::MessageId;

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
