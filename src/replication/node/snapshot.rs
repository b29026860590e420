//! The node's side of a streamed snapshot (`SnapshotRequest`, docs/DR.md): the leader cuts its
//! store at every log's high watermark and streams the files on the request's connection.

use super::*;
use crate::replication::transport::Reply;

impl Shared {
    /// Answers a `SnapshotRequest` (the caller checked that this node leads): chunks, then a
    /// `SnapshotEnd`, all on the request's correlation id.
    pub(super) fn serve_snapshot(
        &self,
        reply: &mut Reply<'_>,
        chunk_bytes: u32,
    ) -> std::result::Result<(), WireError> {
        crate::snapshot::serve(&self.store, chunk_bytes, &mut |m| reply.send(m))
    }
}
