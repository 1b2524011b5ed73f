//! Confidant's public gRPC contract, `confidant.v1`, generated from `proto/confidant/v1/*.proto`.

pub mod v1 {
    #![allow(clippy::all, clippy::pedantic)]
    tonic::include_proto!("confidant.v1");
}

/// The encoded `FileDescriptorSet` of every confidant.v1 file, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("confidant_descriptor");
