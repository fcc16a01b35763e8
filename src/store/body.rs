//! Reading a body whole, behind its declared length: the one place that buffers a stream.

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;

use super::{ByteStream, StoreError};

/// Reads exactly `len` bytes from `body` into one buffer. A body that fails, ends early or has
/// more is an error, found as soon as it shows (one byte too many is enough). Callers bound
/// `len` (memory tier entries, test fixtures), since all of it is held at once.
pub async fn read_exact(mut body: ByteStream, len: u64) -> Result<Bytes, StoreError> {
    let mut buf = BytesMut::with_capacity(len as usize);
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(StoreError::BodyAborted)?;
        let received = buf.len() as u64 + chunk.len() as u64;
        if received > len {
            return Err(StoreError::LengthMismatch {
                declared: len,
                received,
            });
        }
        if buf.is_empty() && received == len {
            // One chunk with the whole body: no copy.
            return finish(body, chunk, len).await;
        }
        buf.extend_from_slice(&chunk);
    }
    if buf.len() as u64 != len {
        return Err(StoreError::LengthMismatch {
            declared: len,
            received: buf.len() as u64,
        });
    }
    Ok(buf.freeze())
}

/// The body is complete with `data`: anything after it is a length mismatch.
async fn finish(mut body: ByteStream, data: Bytes, len: u64) -> Result<Bytes, StoreError> {
    loop {
        match body.next().await {
            None => return Ok(data),
            Some(Ok(extra)) if extra.is_empty() => {}
            Some(Ok(extra)) => {
                return Err(StoreError::LengthMismatch {
                    declared: len,
                    received: len + extra.len() as u64,
                })
            }
            Some(Err(e)) => return Err(StoreError::BodyAborted(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;

    fn chunks(parts: &[&'static [u8]]) -> ByteStream {
        let items: Vec<io::Result<Bytes>> =
            parts.iter().map(|p| Ok(Bytes::from_static(p))).collect();
        Box::pin(futures_util::stream::iter(items))
    }

    #[tokio::test]
    async fn reads_exactly_the_declared_length() {
        let got = read_exact(chunks(&[b"abc", b"", b"defg"]), 7)
            .await
            .unwrap();
        assert_eq!(&got[..], b"abcdefg");
        let whole = read_exact(chunks(&[b"abc", b""]), 3).await.unwrap();
        assert_eq!(&whole[..], b"abc");
        assert_eq!(&read_exact(chunks(&[]), 0).await.unwrap()[..], b"");
        assert!(matches!(
            read_exact(chunks(&[b"ab"]), 3).await,
            Err(StoreError::LengthMismatch {
                declared: 3,
                received: 2
            })
        ));
        assert!(matches!(
            read_exact(chunks(&[b"ab", b"cd"]), 3).await,
            Err(StoreError::LengthMismatch {
                declared: 3,
                received: 4
            })
        ));
        assert!(matches!(
            read_exact(chunks(&[b"abc", b"d"]), 3).await,
            Err(StoreError::LengthMismatch {
                declared: 3,
                received: 4
            })
        ));
        let failing: ByteStream = Box::pin(futures_util::stream::iter(vec![
            Ok(Bytes::from_static(b"a")),
            Err(io::Error::other("cut")),
        ]));
        assert!(matches!(
            read_exact(failing, 3).await,
            Err(StoreError::BodyAborted(_))
        ));
    }
}
