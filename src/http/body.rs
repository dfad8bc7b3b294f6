//! A response body of a few shared byte chunks with an exact length: a cached page and the
//! request's own next link go out without being copied into one buffer.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

pub(crate) struct Chunks<const N: usize> {
    chunks: [Bytes; N],
    next: usize,
}

impl<const N: usize> Chunks<N> {
    pub fn new(chunks: [Bytes; N]) -> Self {
        Chunks { chunks, next: 0 }
    }

    fn remaining(&self) -> u64 {
        self.chunks[self.next..]
            .iter()
            .map(|c| c.len() as u64)
            .sum()
    }
}

impl<const N: usize> Body for Chunks<N> {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        while self.next < N {
            let i = self.next;
            self.next += 1;
            let chunk = std::mem::take(&mut self.chunks[i]);
            if !chunk.is_empty() {
                return Poll::Ready(Some(Ok(Frame::data(chunk))));
            }
        }
        Poll::Ready(None)
    }

    fn is_end_stream(&self) -> bool {
        self.remaining() == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining())
    }
}
