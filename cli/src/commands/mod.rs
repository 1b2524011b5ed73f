pub mod admin;
pub mod assist;
pub mod bot;
pub mod embed;
pub mod intents;
pub mod kb;
pub mod models;
pub mod tokens;
