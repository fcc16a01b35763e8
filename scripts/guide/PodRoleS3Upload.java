// What the guide's `s3Upload` task does (docs/deploy-eks.md, section 8): the gradle-s3 plugin's
// S3Upload action (doesObjectExist, then putObject of the file) on the client the guide's
// NodeS3Upload.getS3Client() builds: the AWS SDK for Java v1, endpoint http://s3.<region>.amazonaws.com
// (the host alias sends it to the node's forward listener), path-style, and the SDK's default
// credential chain, whose web identity provider turns the pod's IRSA token into STS credentials.
//
//     java -cp aws-java-sdk-bundle-1.11.901.jar PodRoleS3Upload.java REGION BUCKET KEY FILE
//     java -cp aws-java-sdk-bundle-1.11.901.jar PodRoleS3Upload.java --plugin-chain
//
// --plugin-chain only asks the credential chain the plugin builds itself (S3Task.getS3Client:
// environment, system properties, profile, container/instance metadata) for credentials and
// prints what it got: in an IRSA pod it has no web identity provider, so it finds none (or the
// node's instance role, where the pod can reach the instance metadata).
//
// Prints one line per step; any failure throws and exits non-zero.

import com.amazonaws.auth.AWSCredentials;
import com.amazonaws.auth.AWSCredentialsProviderChain;
import com.amazonaws.auth.EC2ContainerCredentialsProviderWrapper;
import com.amazonaws.auth.EnvironmentVariableCredentialsProvider;
import com.amazonaws.auth.SystemPropertiesCredentialsProvider;
import com.amazonaws.auth.profile.ProfileCredentialsProvider;
import com.amazonaws.auth.AWSSessionCredentials;
import com.amazonaws.auth.DefaultAWSCredentialsProviderChain;
import com.amazonaws.client.builder.AwsClientBuilder.EndpointConfiguration;
import com.amazonaws.services.s3.AmazonS3;
import com.amazonaws.services.s3.AmazonS3ClientBuilder;
import com.amazonaws.services.s3.model.PutObjectResult;
import com.amazonaws.services.s3.model.S3Object;
import java.io.File;
import java.io.InputStream;
import java.nio.file.Files;
import java.util.Arrays;

public class PodRoleS3Upload {
    public static void main(String[] args) throws Exception {
        if (args[0].equals("--plugin-chain")) {
            AWSCredentialsProviderChain chain = new AWSCredentialsProviderChain(
                    new EnvironmentVariableCredentialsProvider(), new SystemPropertiesCredentialsProvider(),
                    new ProfileCredentialsProvider(), new EC2ContainerCredentialsProviderWrapper());
            try {
                System.out.println("plugin-chain " + chain.getCredentials().getClass().getSimpleName());
            } catch (RuntimeException e) {
                System.out.println("plugin-chain none: " + e.getMessage());
            }
            return;
        }
        String region = args[0], bucket = args[1], key = args[2];
        File file = new File(args[3]);

        // The same builder calls as the guide's getS3Client().
        AmazonS3 s3 = AmazonS3ClientBuilder.standard()
                .withEndpointConfiguration(new EndpointConfiguration("http://s3." + region + ".amazonaws.com", region))
                .withPathStyleAccessEnabled(true)
                .withCredentials(DefaultAWSCredentialsProviderChain.getInstance())
                .build();

        AWSCredentials credentials = DefaultAWSCredentialsProviderChain.getInstance().getCredentials();
        System.out.println("credentials " + credentials.getClass().getSimpleName()
                + " session-token " + (credentials instanceof AWSSessionCredentials
                        && ((AWSSessionCredentials) credentials).getSessionToken() != null));

        // The plugin's S3Upload.task(): upload unless the object exists (overwrite = false).
        boolean exists = s3.doesObjectExist(bucket, key);
        System.out.println("exists-before " + exists);
        if (!exists) {
            PutObjectResult put = s3.putObject(bucket, key, file);
            System.out.println("put-etag " + put.getETag());
        }
        System.out.println("exists-after " + s3.doesObjectExist(bucket, key));

        byte[] expected = Files.readAllBytes(file.toPath());
        try (S3Object object = s3.getObject(bucket, key); InputStream in = object.getObjectContent()) {
            byte[] got = in.readAllBytes();
            if (!Arrays.equals(got, expected)) {
                throw new IllegalStateException("read back " + got.length + " bytes that differ from the "
                        + expected.length + " uploaded");
            }
        }
        System.out.println("read-back " + key);
        s3.shutdown();
    }
}
