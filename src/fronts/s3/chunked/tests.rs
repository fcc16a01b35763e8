//! The decoder against AWS's published aws-chunked example (its chunk signatures included), a
//! body written by botocore's `AwsChunkedWrapper`, and broken bodies.

use std::task::Waker;

use super::*;
use crate::checksum::to_base64;
use crate::fronts::s3::sigv4::{SecretKey, SigningKey};

const SEED: &str = "4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9";
const AWS_CHUNK_SIGNATURES: [&str; 3] = [
    "ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648",
    "0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497",
    "b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9",
];

/// `10000;chunk-signature=<64>\r\n` and `400;chunk-signature=<64>\r\n`.
const FIRST_HEADER: usize = 88;
const SECOND_HEADER: usize = 86;

fn aws_signing() -> ChunkSigning {
    let mut seed_signature = [0; 32];
    hex::decode_to_slice(SEED, &mut seed_signature).unwrap();
    ChunkSigning {
        seed_signature,
        key: SigningKey::derive(
            &SecretKey::new("wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"),
            "20130524",
            "us-east-1",
            "s3",
        ),
        amz_date: "20130524T000000Z".into(),
        scope: "20130524/us-east-1/s3/aws4_request".into(),
    }
}

fn signed_options(decoded_length: u64) -> ChunkedOptions {
    ChunkedOptions {
        signatures: ChunkSignatures::Checked(aws_signing()),
        trailer: false,
        trailer_checksum: None,
        decoded_length,
        max_chunk: DEFAULT_MAX_CHUNK,
    }
}

/// AWS's example: 64 KiB of 'a', then 1 KiB of 'a', then the final chunk, 66824 bytes.
fn aws_example_body() -> Vec<u8> {
    let mut body = Vec::new();
    for (size, signature) in [
        (65536, AWS_CHUNK_SIGNATURES[0]),
        (1024, AWS_CHUNK_SIGNATURES[1]),
    ] {
        body.extend_from_slice(format!("{size:x};chunk-signature={signature}\r\n").as_bytes());
        body.extend(std::iter::repeat_n(b'a', size));
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(
        format!("0;chunk-signature={}\r\n\r\n", AWS_CHUNK_SIGNATURES[2]).as_bytes(),
    );
    body
}

/// A signed body of `chunks` with our own signer, and optionally a signed trailer.
fn signed_body(
    signing: &ChunkSigning,
    chunks: &[&[u8]],
    trailers: Option<&[(&str, &str)]>,
) -> Vec<u8> {
    let mut previous = signing.seed_signature;
    let mut body = Vec::new();
    for chunk in chunks.iter().copied().chain([&b""[..]]) {
        let signature = signing.chunk_signature(&previous, &Sha256::digest(chunk).into());
        body.extend_from_slice(
            format!(
                "{:x};chunk-signature={}\r\n",
                chunk.len(),
                hex::encode(signature)
            )
            .as_bytes(),
        );
        if !chunk.is_empty() {
            body.extend_from_slice(chunk);
            body.extend_from_slice(b"\r\n");
        }
        previous = signature;
    }
    if let Some(trailers) = trailers {
        let mut canonical = String::new();
        for (name, value) in trailers {
            body.extend_from_slice(format!("{name}:{value}\r\n").as_bytes());
            canonical.push_str(&format!("{name}:{value}\n"));
        }
        let signature =
            signing.trailer_signature(&previous, &Sha256::digest(canonical.as_bytes()).into());
        body.extend_from_slice(
            format!("x-amz-trailer-signature:{}\r\n", hex::encode(signature)).as_bytes(),
        );
    }
    body.extend_from_slice(b"\r\n");
    body
}

/// Feeds `body` in pieces cut at `cuts` and drains the decoder. Returns the bytes it released and
/// the error it ended with, if any.
fn decode_cut(body: &[u8], cuts: &[usize], options: ChunkedOptions) -> (Vec<u8>, Option<S3Error>) {
    let mut pieces = Vec::new();
    let mut start = 0;
    for &cut in cuts.iter().chain([&body.len()]) {
        if cut > start {
            pieces.push(Ok(Bytes::copy_from_slice(&body[start..cut])));
            start = cut;
        }
    }
    drain(AwsChunkedDecoder::new(
        futures_util::stream::iter(pieces),
        options,
    ))
}

fn drain<S: Stream<Item = io::Result<Bytes>> + Unpin>(mut stream: S) -> (Vec<u8>, Option<S3Error>) {
    let mut cx = Context::from_waker(Waker::noop());
    let mut out = Vec::new();
    loop {
        match Pin::new(&mut stream).poll_next(&mut cx) {
            Poll::Ready(Some(Ok(bytes))) => {
                assert!(!bytes.is_empty(), "no empty items");
                out.extend_from_slice(&bytes);
            }
            Poll::Ready(Some(Err(err))) => {
                let s3 = S3Error::from_body_error(&err)
                    .unwrap_or_else(|| panic!("not an S3 error: {err}"));
                assert!(
                    matches!(Pin::new(&mut stream).poll_next(&mut cx), Poll::Ready(None)),
                    "nothing after an error"
                );
                return (out, Some(s3));
            }
            Poll::Ready(None) => return (out, None),
            Poll::Pending => panic!("test input is always ready"),
        }
    }
}

fn decode(body: &[u8], options: ChunkedOptions) -> (Vec<u8>, Option<S3Error>) {
    decode_cut(body, &[], options)
}

fn code(result: &(Vec<u8>, Option<S3Error>)) -> Option<S3ErrorCode> {
    result.1.as_ref().map(|err| err.code)
}

#[test]
fn aws_example_decodes_however_it_is_cut() {
    let body = aws_example_body();
    assert_eq!(body.len(), 66824, "AWS's example Content-Length");
    let expected = vec![b'a'; 66560];
    let whole = decode(&body, signed_options(66560));
    assert_eq!(whole, (expected.clone(), None));
    let byte_by_byte: Vec<usize> = (1..body.len()).collect();
    assert_eq!(
        decode_cut(&body, &byte_by_byte, signed_options(66560)),
        (expected.clone(), None)
    );
    let every_1000: Vec<usize> = (1..body.len()).step_by(1000).collect();
    assert_eq!(
        decode_cut(&body, &every_1000, signed_options(66560)),
        (expected.clone(), None)
    );
    // One cut at every place around the headers, the chunk ends and the final chunk.
    let second_header = FIRST_HEADER + 65536 + 2;
    for cut in (0..120)
        .chain(second_header - 10..second_header + 100)
        .chain(body.len() - 100..body.len())
    {
        assert_eq!(
            decode_cut(&body, &[cut], signed_options(66560)),
            (expected.clone(), None),
            "cut at {cut}"
        );
    }
}

#[test]
fn a_bad_second_chunk_releases_none_of_its_bytes() {
    let good = aws_example_body();
    let mut bad_signature = good.clone();
    let at = FIRST_HEADER + 65536 + 2 + "400;chunk-signature=".len();
    bad_signature[at] = if bad_signature[at] == b'0' {
        b'1'
    } else {
        b'0'
    };
    let mut bad_data = good.clone();
    bad_data[FIRST_HEADER + 65536 + 2 + SECOND_HEADER + 500] = b'b';
    for body in [bad_signature, bad_data] {
        for cuts in [vec![], (1..body.len()).step_by(7).collect()] {
            let (released, err) = decode_cut(&body, &cuts, signed_options(66560));
            assert_eq!(
                err.map(|e| e.code),
                Some(S3ErrorCode::SignatureDoesNotMatch)
            );
            // Chunk 1 checked out, its last byte kept back; nothing of chunk 2.
            assert_eq!(released.len(), 65535);
        }
    }
    let mut bad_first = good;
    bad_first[FIRST_HEADER + 10] = b'b';
    let (released, err) = decode(&bad_first, signed_options(66560));
    assert_eq!(
        (released.len(), err.map(|e| e.code)),
        (0, Some(S3ErrorCode::SignatureDoesNotMatch))
    );
}

#[test]
fn a_chunk_larger_than_the_cap_is_refused_from_its_header() {
    let header = format!("10000;chunk-signature={}\r\n", AWS_CHUNK_SIGNATURES[0]);
    let mut options = signed_options(66560);
    options.max_chunk = 65535;
    let result = decode(header.as_bytes(), options);
    assert_eq!(code(&result), Some(S3ErrorCode::InvalidRequest));
    assert!(result.1.unwrap().message.contains("65535"));
    // More data than x-amz-decoded-content-length, caught from the header too.
    assert_eq!(
        code(&decode(header.as_bytes(), signed_options(65535))),
        Some(S3ErrorCode::InvalidRequest)
    );
}

#[test]
fn a_truncated_body_is_incomplete() {
    let body = aws_example_body();
    for len in [
        0,
        10,
        FIRST_HEADER,
        FIRST_HEADER + 65536,
        FIRST_HEADER + 65536 + 1,
        FIRST_HEADER + 65536 + 2 + SECOND_HEADER + 1024 + 2,
        body.len() - 1,
    ] {
        let (released, err) = decode(&body[..len], signed_options(66560));
        assert_eq!(
            err.map(|e| e.code),
            Some(S3ErrorCode::IncompleteBody),
            "cut to {len}"
        );
        assert!(released.len() < 66560);
    }
}

#[test]
fn the_decoded_length_must_match() {
    let body = aws_example_body();
    let (released, err) = decode(&body, signed_options(66561));
    assert_eq!(err.map(|e| e.code), Some(S3ErrorCode::IncompleteBody));
    assert_eq!(released.len(), 66559, "the last byte is kept back");
    assert_eq!(
        code(&decode(&body, signed_options(66559))),
        Some(S3ErrorCode::InvalidRequest)
    );
}

#[test]
fn malformed_framing() {
    let signing = aws_signing();
    let good = signed_body(&signing, &[b"hello"], None);
    let text = String::from_utf8(good.clone()).unwrap();
    let cases: Vec<(String, &str)> = vec![
        (text.replacen("5;", "x5;", 1), "bad hex"),
        (
            text.replacen("5;", "10000000000000005;", 1),
            "too many hex digits",
        ),
        (text.replacen("5;", ";", 1), "no size"),
        (
            text.replacen("hello\r\n", "hello\n", 1),
            "no CRLF after data",
        ),
        (
            text.replacen("hello\r\n", "helloXY", 1),
            "garbage after data",
        ),
        (
            text.replacen("chunk-signature=", "chunk-signatur=", 1),
            "bad extension",
        ),
        (
            text.replacen(";chunk-signature=", ";chunk-signature=zz", 1),
            "long signature",
        ),
        (
            text.replacen("\r\nhello", "\nhello", 1),
            "header without CR",
        ),
        (format!("{text}trailing"), "data after the end"),
        (
            text.trim_end_matches("\r\n").to_owned() + "\r\nx-amz-checksum-crc32:AAAAAA==\r\n\r\n",
            "trailer not allowed",
        ),
        (
            format!(
                "5;chunk-signature={}{}",
                "a".repeat(64),
                " ".repeat(MAX_CHUNK_HEADER)
            ),
            "header too long",
        ),
    ];
    for (body, what) in cases {
        let result = decode(body.as_bytes(), signed_options(5));
        assert!(
            matches!(
                code(&result),
                Some(
                    S3ErrorCode::InvalidRequest
                        | S3ErrorCode::IncompleteBody
                        | S3ErrorCode::SignatureDoesNotMatch
                )
            ),
            "{what}: {:?}",
            result.1
        );
        assert!(result.0.len() < 5, "{what}: the body never completes");
    }
    assert_eq!(decode(&good, signed_options(5)), (b"hello".to_vec(), None));
}

fn unsigned_options(decoded_length: u64, checksum: Option<ChecksumAlgorithm>) -> ChunkedOptions {
    ChunkedOptions {
        signatures: ChunkSignatures::None,
        trailer: true,
        trailer_checksum: checksum,
        decoded_length,
        max_chunk: DEFAULT_MAX_CHUNK,
    }
}

/// What botocore 1.43's `AwsChunkedWrapper` wrote for 130 bytes with `chunk_size=50` and CRC32
/// (`STREAMING-UNSIGNED-PAYLOAD-TRAILER`, as the aws CLI sends over https).
const BOTOCORE_UNSIGNED: &[u8] = b"32\r\nhello world, hello world, hello world, hello world\r\n32\r\n, hello world, hello world, hello world, hello wor\r\n1e\r\nld, hello world, hello world, \r\n0\r\nx-amz-checksum-crc32:AfkR9g==\r\n\r\n";

#[test]
fn botocore_unsigned_trailer_body() {
    let expected = b"hello world, ".repeat(10);
    let decoder = AwsChunkedDecoder::new(
        futures_util::stream::iter(vec![Ok(Bytes::from_static(BOTOCORE_UNSIGNED))]),
        unsigned_options(130, Some(ChecksumAlgorithm::Crc32)),
    );
    let slot = decoder.trailer_checksum();
    assert_eq!(drain(decoder), (expected.clone(), None));
    let (algorithm, value) = slot.get().expect("the checksum is recorded");
    assert_eq!(
        (*algorithm, to_base64(value).as_str()),
        (ChecksumAlgorithm::Crc32, "AfkR9g==")
    );
    let byte_by_byte: Vec<usize> = (1..BOTOCORE_UNSIGNED.len()).collect();
    assert_eq!(
        decode_cut(
            BOTOCORE_UNSIGNED,
            &byte_by_byte,
            unsigned_options(130, Some(ChecksumAlgorithm::Crc32))
        ),
        (expected, None)
    );
}

/// Found by the `aws_chunked` fuzz target: the trailer checksum was published as soon as it
/// matched, so a body that then failed (short of its declared length, or with bytes after the
/// trailer) still reported it.
#[test]
fn a_failed_body_reports_no_trailer_checksum() {
    let trailing_data = [BOTOCORE_UNSIGNED, b"x"].concat();
    for (body, declared) in [(BOTOCORE_UNSIGNED, 131), (&trailing_data[..], 130)] {
        let decoder = AwsChunkedDecoder::new(
            futures_util::stream::iter(vec![Ok(Bytes::copy_from_slice(body))]),
            unsigned_options(declared, Some(ChecksumAlgorithm::Crc32)),
        );
        let slot = decoder.trailer_checksum();
        let (_, err) = drain(decoder);
        assert!(err.is_some(), "{declared}");
        assert_eq!(slot.get(), None, "{declared}");
    }
}

#[test]
fn a_trailer_checksum_mismatch_keeps_the_end_back() {
    let wrong = String::from_utf8(BOTOCORE_UNSIGNED.to_vec())
        .unwrap()
        .replace("AfkR9g==", "AfkR9w==");
    for cuts in [vec![], (1..wrong.len()).collect()] {
        let (released, err) = decode_cut(
            wrong.as_bytes(),
            &cuts,
            unsigned_options(130, Some(ChecksumAlgorithm::Crc32)),
        );
        assert_eq!(err.map(|e| e.code), Some(S3ErrorCode::BadDigest));
        assert!(released.len() < 130, "the whole body was never released");
    }
    // A trailer that was not announced, or an announced one that is missing.
    assert_eq!(
        code(&decode(
            BOTOCORE_UNSIGNED,
            unsigned_options(130, Some(ChecksumAlgorithm::Crc32c))
        )),
        Some(S3ErrorCode::InvalidRequest)
    );
    assert_eq!(
        code(&decode(BOTOCORE_UNSIGNED, unsigned_options(130, None))),
        Some(S3ErrorCode::InvalidRequest)
    );
    let no_trailer = b"5\r\nhello\r\n0\r\n\r\n";
    assert_eq!(
        code(&decode(
            no_trailer,
            unsigned_options(5, Some(ChecksumAlgorithm::Crc32))
        )),
        Some(S3ErrorCode::InvalidRequest)
    );
    assert_eq!(
        decode(no_trailer, unsigned_options(5, None)),
        (b"hello".to_vec(), None)
    );
    // Unsigned chunks carry no signatures.
    let text = signed_body(&aws_signing(), &[b"hello"], None);
    assert_eq!(
        code(&decode(&text, unsigned_options(5, None))),
        Some(S3ErrorCode::InvalidRequest)
    );
}

#[test]
fn signed_trailer() {
    let signing = aws_signing();
    let data = b"some build output".repeat(1000);
    let crc = {
        let mut hasher = ChecksumAlgorithm::Crc32c.hasher();
        hasher.update(&data);
        to_base64(&hasher.finalize())
    };
    let chunks: Vec<&[u8]> = data.chunks(4096).collect();
    let options = || ChunkedOptions {
        signatures: ChunkSignatures::Checked(aws_signing()),
        trailer: true,
        trailer_checksum: Some(ChecksumAlgorithm::Crc32c),
        decoded_length: data.len() as u64,
        max_chunk: 4096,
    };
    let body = signed_body(&signing, &chunks, Some(&[("x-amz-checksum-crc32c", &crc)]));
    let cuts: Vec<usize> = (1..body.len()).step_by(13).collect();
    assert_eq!(decode_cut(&body, &cuts, options()), (data.clone(), None));
    // The trailer's value changed after signing: its signature fails.
    let forged = String::from_utf8(body.clone()).unwrap().replace(
        &format!("x-amz-checksum-crc32c:{crc}"),
        "x-amz-checksum-crc32c:AAAAAA==",
    );
    let (released, err) = decode(forged.as_bytes(), options());
    assert_eq!(
        err.map(|e| e.code),
        Some(S3ErrorCode::SignatureDoesNotMatch)
    );
    assert_eq!(released.len(), data.len() - 1);
    // A correctly signed trailer with the wrong checksum.
    let wrong = signed_body(
        &signing,
        &chunks,
        Some(&[("x-amz-checksum-crc32c", "AAAAAA==")]),
    );
    assert_eq!(
        code(&decode(&wrong, options())),
        Some(S3ErrorCode::BadDigest)
    );
    // The signed variant needs the trailer signature.
    let unsigned_trailer = String::from_utf8(body).unwrap();
    let cut = unsigned_trailer.find("x-amz-trailer-signature").unwrap();
    let without = format!("{}\r\n", &unsigned_trailer[..cut]);
    assert_eq!(
        code(&decode(without.as_bytes(), options())),
        Some(S3ErrorCode::InvalidRequest)
    );
}

#[test]
fn upstream_errors_pass_through() {
    let body = aws_example_body();
    let pieces = vec![
        Ok(Bytes::copy_from_slice(&body[..1000])),
        Err(io::Error::other("connection reset")),
    ];
    let mut decoder =
        AwsChunkedDecoder::new(futures_util::stream::iter(pieces), signed_options(66560));
    let mut cx = Context::from_waker(Waker::noop());
    match Pin::new(&mut decoder).poll_next(&mut cx) {
        Poll::Ready(Some(Err(err))) => assert_eq!(err.to_string(), "connection reset"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn options_from_the_request() {
    let mut headers = HeaderMap::new();
    assert!(ChunkedOptions::for_request(&Payload::Unsigned, &headers)
        .unwrap()
        .is_none());
    let payload = Payload::SignedChunks {
        signing: aws_signing(),
        trailer: false,
    };
    assert_eq!(
        ChunkedOptions::for_request(&payload, &headers)
            .unwrap_err()
            .code,
        S3ErrorCode::MissingContentLength
    );
    headers.insert("x-amz-decoded-content-length", "66560".parse().unwrap());
    let options = ChunkedOptions::for_request(&payload, &headers)
        .unwrap()
        .unwrap();
    assert_eq!((options.decoded_length, options.trailer), (66560, false));
    headers.insert("x-amz-trailer", "x-amz-checksum-crc32".parse().unwrap());
    assert!(
        ChunkedOptions::for_request(&payload, &headers).is_err(),
        "a trailer needs a -TRAILER payload"
    );
    let options = ChunkedOptions::for_request(&Payload::UnsignedChunksWithTrailer, &headers)
        .unwrap()
        .unwrap();
    assert_eq!(options.trailer_checksum, Some(ChecksumAlgorithm::Crc32));
    headers.insert("x-amz-trailer", "x-amz-meta-foo".parse().unwrap());
    assert!(ChunkedOptions::for_request(&Payload::UnsignedChunksWithTrailer, &headers).is_err());
}

#[test]
fn framing_only_reads_signed_chunks_without_checking_them() {
    let signing = aws_signing();
    let data = b"forwarded build output".repeat(500);
    let crc = {
        let mut hasher = ChecksumAlgorithm::Crc32.hasher();
        hasher.update(&data);
        to_base64(&hasher.finalize())
    };
    let chunks: Vec<&[u8]> = data.chunks(3000).collect();
    let mut headers = HeaderMap::new();
    headers.insert(
        "x-amz-content-sha256",
        "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER"
            .parse()
            .unwrap(),
    );
    headers.insert(
        "x-amz-decoded-content-length",
        data.len().to_string().parse().unwrap(),
    );
    headers.insert("x-amz-trailer", "x-amz-checksum-crc32".parse().unwrap());
    let options = ChunkedOptions::framing_only(&headers).unwrap().unwrap();
    assert!(matches!(options.signatures, ChunkSignatures::Unchecked));
    let body = signed_body(&signing, &chunks, Some(&[("x-amz-checksum-crc32", &crc)]));
    let cuts: Vec<usize> = (1..body.len()).step_by(97).collect();
    assert_eq!(
        decode_cut(&body, &cuts, options.clone()),
        (data.clone(), None)
    );
    // A wrong signature is S3's to find; the framing is intact, so the data comes out.
    let text = String::from_utf8(body).unwrap();
    let first = text.find("chunk-signature=").unwrap() + "chunk-signature=".len();
    let mut forged = text.clone();
    forged.replace_range(first..first + 4, "0000");
    assert_eq!(
        decode(forged.as_bytes(), options.clone()),
        (data.clone(), None)
    );
    // Limits and checks still hold: a chunk header with no signature, a wrong trailer checksum.
    let unsigned = text.replacen(&text[first - 17..first + 64], "", 1);
    assert_eq!(
        code(&decode(unsigned.as_bytes(), options.clone())),
        Some(S3ErrorCode::InvalidRequest)
    );
    let wrong = text.replace(&crc, "AAAAAA==");
    assert_eq!(
        code(&decode(wrong.as_bytes(), options)),
        Some(S3ErrorCode::BadDigest)
    );
    // Not aws-chunked, or a payload we do not know: no options, no copy.
    for payload in ["UNSIGNED-PAYLOAD", "STREAMING-SOMETHING-NEW"] {
        headers.insert("x-amz-content-sha256", payload.parse().unwrap());
        assert!(ChunkedOptions::framing_only(&headers).unwrap().is_none());
    }
    headers.insert(
        "x-amz-content-sha256",
        "STREAMING-AWS4-HMAC-SHA256-PAYLOAD".parse().unwrap(),
    );
    headers.remove("x-amz-decoded-content-length");
    assert!(ChunkedOptions::framing_only(&headers).is_err());
}
