// A resolver probe for Java (InetAddress, through the JDK's resolver):
// one line per name given,
//   NAME ok ADDR[,ADDR...]   or   NAME error MESSAGE
// Run as a single-file program: java Resolve.java NAME...
import java.net.InetAddress;
import java.security.Security;

public class Resolve {
    public static void main(String[] args) {
        // No caching between tests' names.
        Security.setProperty("networkaddress.cache.ttl", "0");
        Security.setProperty("networkaddress.cache.negative.ttl", "0");
        for (String name : args) {
            try {
                InetAddress[] all = InetAddress.getAllByName(name);
                StringBuilder sb = new StringBuilder();
                for (int i = 0; i < all.length; i++) {
                    if (i > 0) sb.append(',');
                    sb.append(all[i].getHostAddress());
                }
                System.out.println(name + " ok " + sb);
            } catch (Exception e) {
                System.out.println(name + " error " + e);
            }
        }
    }
}
