// A resolver probe for Node: dns.resolve4 (c-ares, the resolver in
// resolv.conf) or dns.lookup (getaddrinfo), one line per name,
//   NAME ok ADDR[,ADDR...]   or   NAME error MESSAGE
// node resolve.js resolve|lookup NAME...
const dns = require('dns');
const [mode, ...names] = process.argv.slice(2);
(async () => {
  for (const name of names) {
    try {
      const addrs = mode === 'lookup'
        ? (await dns.promises.lookup(name, { all: true })).map((a) => a.address)
        : await dns.promises.resolve4(name);
      console.log(`${name} ok ${addrs.join(',')}`);
    } catch (e) {
      console.log(`${name} error ${e.code || e.message}`);
    }
  }
})();
