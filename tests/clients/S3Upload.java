// The gradle-s3 plugin's `s3Upload` step, done with the SDK it uses (AWS SDK for Java v1):
// doesObjectExist, then putObject (over http: an aws-chunked body with chained chunk signatures
// and Content-MD5; the SDK fails the upload unless the returned ETag is the MD5 it computed),
// then a TransferManager multipart upload, then both read back.
//
//     java -cp aws-java-sdk-bundle-1.11.901.jar S3Upload.java \
//         ENDPOINT ACCESS SECRET BUCKET KEY FILE BIG_KEY BIG_FILE
//
// Prints one line per step; any failure throws and exits non-zero.

import com.amazonaws.auth.AWSStaticCredentialsProvider;
import com.amazonaws.auth.BasicAWSCredentials;
import com.amazonaws.client.builder.AwsClientBuilder.EndpointConfiguration;
import com.amazonaws.services.s3.AmazonS3;
import com.amazonaws.services.s3.AmazonS3ClientBuilder;
import com.amazonaws.services.s3.model.ObjectMetadata;
import com.amazonaws.services.s3.model.PutObjectResult;
import com.amazonaws.services.s3.model.S3Object;
import com.amazonaws.services.s3.transfer.TransferManager;
import com.amazonaws.services.s3.transfer.TransferManagerBuilder;
import com.amazonaws.services.s3.transfer.model.UploadResult;
import java.io.File;
import java.io.InputStream;
import java.nio.file.Files;
import java.security.MessageDigest;
import java.util.Arrays;

public class S3Upload {
    public static void main(String[] args) throws Exception {
        String endpoint = args[0], access = args[1], secret = args[2], bucket = args[3];
        String key = args[4], bigKey = args[6];
        File file = new File(args[5]), bigFile = new File(args[7]);
        AmazonS3 s3 = AmazonS3ClientBuilder.standard()
                .withEndpointConfiguration(new EndpointConfiguration(endpoint, "us-east-1"))
                .withPathStyleAccessEnabled(true)
                .withCredentials(new AWSStaticCredentialsProvider(new BasicAWSCredentials(access, secret)))
                .build();

        System.out.println("exists-before " + s3.doesObjectExist(bucket, key));
        PutObjectResult put = s3.putObject(bucket, key, file);
        System.out.println("put-etag " + put.getETag());

        long part = 5L << 20;
        TransferManager transfers = TransferManagerBuilder.standard()
                .withS3Client(s3)
                .withMultipartUploadThreshold(part)
                .withMinimumUploadPartSize(part)
                .build();
        UploadResult big = transfers.upload(bucket, bigKey, bigFile).waitForUploadResult();
        System.out.println("multipart-etag " + big.getETag());
        transfers.shutdownNow(false);

        System.out.println("exists-after " + s3.doesObjectExist(bucket, key));
        for (String[] pair : new String[][] {{key, args[5]}, {bigKey, args[7]}}) {
            byte[] expected = Files.readAllBytes(new File(pair[1]).toPath());
            try (S3Object object = s3.getObject(bucket, pair[0]);
                    InputStream in = object.getObjectContent()) {
                byte[] got = in.readAllBytes();
                if (!Arrays.equals(got, expected)) {
                    throw new IllegalStateException(pair[0] + ": read back " + got.length
                            + " bytes that differ from the " + expected.length + " uploaded");
                }
            }
            System.out.println("read-back " + pair[0]);
        }
        s3.shutdown();
    }
}
