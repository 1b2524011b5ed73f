pub mod admin;
pub mod embed;
pub mod kb;
pub mod models;
pub mod tokens;
