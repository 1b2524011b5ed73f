pub mod admin;
pub mod embed;
pub mod models;
