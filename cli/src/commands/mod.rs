pub mod admin;
pub mod embed;
pub mod models;
pub mod tokens;
