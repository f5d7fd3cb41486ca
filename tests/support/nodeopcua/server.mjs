// A secured OPC-UA server built on node-opcua (a third-party stack), for the gateway's interoperability tests.
//
// Usage: node server.mjs PORT PKI_DIR USER PASSWORD
//   PORT      TCP port on 127.0.0.1
//   PKI_DIR   node-opcua's certificate folder; the server makes its own certificate there on first start
//   USER, PASSWORD   the only login (anonymous sessions are refused)
// One endpoint: Basic256Sha256, SignAndEncrypt. Only client certificates in PKI_DIR/trusted/certs are accepted
// (put them there before starting); an unknown one is refused and kept in PKI_DIR/rejected.
//
// Address space: object Press (ns=1;s=Press) with
//   ns=1;s=Press.Counter      UInt32, +1 every 100 ms
//   ns=1;s=Press.Temperature  Double, 200 + (counter % 50) / 10
//   ns=1;s=Press.State        Int32, 2 (running) while the counter is even, 1 (idle) while odd
// Every value written is printed as `VALUE <iso source timestamp> <tag> <value>` (what tests compare with),
// after `READY <port> <server certificate file>` once it listens. SIGTERM / SIGINT stop it (exit code 0).
import process from 'node:process'

import {
  DataType,
  MessageSecurityMode,
  OPCUACertificateManager,
  OPCUAServer,
  SecurityPolicy,
  StatusCodes,
  Variant,
} from 'node-opcua'

const APPLICATION_URI = 'urn:shopfloor:test:nodeopcua-server'
const INTERVAL_MS = 100

const [portArg, pkiDir, user, password] = process.argv.slice(2)
const port = Number(portArg)
if (!Number.isInteger(port) || port <= 0 || port > 65535 || !pkiDir || !user || !password) {
  console.error('usage: node server.mjs PORT PKI_DIR USER PASSWORD')
  process.exit(2)
}

const serverCertificateManager = new OPCUACertificateManager({
  rootFolder: pkiDir,
  automaticallyAcceptUnknownCertificate: false,
})
await serverCertificateManager.initialize()

const server = new OPCUAServer({
  port,
  hostname: '127.0.0.1',
  serverCertificateManager,
  securityPolicies: [SecurityPolicy.Basic256Sha256],
  securityModes: [MessageSecurityMode.SignAndEncrypt],
  allowAnonymous: false,
  userManager: { isValidUser: (name, secret) => name === user && secret === password },
  serverInfo: {
    applicationUri: APPLICATION_URI,
    productUri: 'urn:shopfloor:test:nodeopcua',
    applicationName: { text: 'Shopfloor node-opcua interop server' },
  },
})
await server.initialize()

const addressSpace = server.engine.addressSpace
const namespace = addressSpace.getOwnNamespace()
const press = namespace.addObject({ organizedBy: addressSpace.rootFolder.objects, browseName: 'Press', nodeId: 's=Press' })
const variables = {
  counter: namespace.addVariable({ componentOf: press, browseName: 'Counter', nodeId: 's=Press.Counter', dataType: 'UInt32' }),
  temperature: namespace.addVariable({ componentOf: press, browseName: 'Temperature', nodeId: 's=Press.Temperature', dataType: 'Double' }),
  state: namespace.addVariable({ componentOf: press, browseName: 'State', nodeId: 's=Press.State', dataType: 'Int32' }),
}
const types = { counter: DataType.UInt32, temperature: DataType.Double, state: DataType.Int32 }

let counter = 0
function update() {
  const now = new Date()
  const values = { counter, temperature: 200 + (counter % 50) / 10, state: counter % 2 === 0 ? 2 : 1 }
  const lines = []
  for (const [tag, value] of Object.entries(values)) {
    variables[tag].setValueFromSource(new Variant({ dataType: types[tag], value }), StatusCodes.Good, now)
    lines.push(`VALUE ${now.toISOString()} ${tag} ${value}`)
  }
  process.stdout.write(lines.join('\n') + '\n')
  counter += 1
}
update()
const timer = setInterval(update, INTERVAL_MS)

await server.start()
console.log(`READY ${port} ${server.certificateFile}`)

async function stop() {
  clearInterval(timer)
  await server.shutdown(0)
  process.exit(0)
}
process.on('SIGTERM', stop)
process.on('SIGINT', stop)
