// A loan system written in Node.js scoring applicants against a party's local scoring API.
// Usage: node score.js <protos dir> <host:port> <token file> <id_kind> <id> [<id> ...]
// Prints the LocalScoreResponse as JSON; exits non-zero with the gRPC status on failure.
"use strict";
const fs = require("fs");
const path = require("path");
const grpc = require("@grpc/grpc-js");
const loader = require("@grpc/proto-loader");

const [protos, address, tokenFile, idKind, ...ids] = process.argv.slice(2);
const def = loader.loadSync(path.join(protos, "fedcredit/v1/scoring.proto"), {
  includeDirs: [protos], keepCase: true, longs: Number, enums: String, defaults: true,
});
const pkg = grpc.loadPackageDefinition(def);
const client = new pkg.fedcredit.v1.LocalScoring(address, grpc.credentials.createInsecure());
const meta = new grpc.Metadata();
const token = tokenFile === "-" ? "" : fs.readFileSync(tokenFile, "utf8").trim();
if (token) meta.add("authorization", `Bearer ${token}`);
const request = { applicants: ids.map((id) => ({ id, id_kind: idKind })) };
client.Score(request, meta, { deadline: Date.now() + 120000 }, (err, resp) => {
  if (err) {
    console.error(JSON.stringify({ code: grpc.status[err.code], details: err.details }));
    process.exit(2);
  }
  console.log(JSON.stringify(resp));
  client.close();
});
