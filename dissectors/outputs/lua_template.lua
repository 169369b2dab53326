-- SPDX-License-Identifier: GPL-2.0-or-later
-- qmig: QEMU live-migration dissector for Wireshark, written by `migshark export-wireshark`.
--
-- Load: tshark -X lua_script:qmig.lua -r capture.pcap -Y qmig
-- or copy into ~/.local/lib/wireshark/plugins/ (not both: the protocol would be registered twice).
--
-- Everything about the wire format (fields, sizes, enums, constants, dispatch tables) is in the
-- generated block below, produced from the Scapy declarations in migshark's dissectors/layers/.
-- The rest of this file is generic machinery: per-stream state, walking records across TCP
-- segments (desegmentation for headers, skipping payload by length), heuristics, prefs, experts.
-- Written for Wireshark 4.0 (Lua 5.2) and later: no integer operators, `bit` for bit operations.

--@@GENERATED@@

local qmig = Proto("qmig", "QEMU migration")

-- Machinery fields (not wire structures).
local MF = {
    channel = ProtoField.string("qmig.channel", "Channel"),
    record = ProtoField.string("qmig.record", "Record"),
    continued = ProtoField.string("qmig.record.continued", "Record continued"),
    data = ProtoField.bytes("qmig.data", "Payload (skipped by length)"),
    device = ProtoField.bytes("qmig.device_state", "Device state (not decoded)"),
    opaque = ProtoField.bytes("qmig.not_walked", "Not walked"),
    retrans = ProtoField.bytes("qmig.retransmitted", "Retransmitted bytes (already dissected)"),
    -- the channel this record belongs to, on every record of it (filters: qmig.multifd.id == 2,
    -- qmig.migration == "10.0.0.2:4444", qmig.channel.misclassified)
    mfd_id = ProtoField.uint32("qmig.multifd.id", "Multifd channel id"),
    migration = ProtoField.string("qmig.migration", "Migration (destination address:port)"),
    connection = ProtoField.string("qmig.connection", "Connection (client address:port)"),
    tls = ProtoField.bool("qmig.tls", "Carried in TLS (decrypted by Wireshark)"),
    accept = ProtoField.uint32("qmig.channel.accept_index", "Accept index (order of connection at the destination)"),
    policy = ProtoField.string("qmig.channel.policy", "Destination policy (preference qmig.policy)"),
    assigned = ProtoField.string("qmig.channel.assigned", "Role the destination gives it"),
    misclassified = ProtoField.bool("qmig.channel.misclassified", "Misclassified by the destination"),
    why = ProtoField.string("qmig.channel.error", "What the destination does"),
    -- a run of zero-page records (ZERO|CONTINUE) shown as one qmig.record item (K.RAM_ZERO)
    zero_pages = ProtoField.uint32("qmig.zero_run.pages", "Zero-page records in this run"),
    zero_first = ProtoField.uint64("qmig.zero_run.first", "First page address", base.HEX),
    zero_last = ProtoField.uint64("qmig.zero_run.last", "Last page address", base.HEX),
}
local MF_ORDER = {"channel", "record", "continued", "data", "device", "opaque", "retrans", "mfd_id", "migration",
                  "connection", "tls", "accept", "policy", "assigned", "misclassified", "why", "zero_pages",
                  "zero_first", "zero_last"}

do
    local list = {}
    for _, abbrev in ipairs(FIELD_ORDER) do list[#list + 1] = F[abbrev] end
    for _, key in ipairs(MF_ORDER) do list[#list + 1] = MF[key] end
    qmig.fields = list
end

local E = {
    bad_magic = ProtoExpert.new("qmig.expert.bad_magic", "Bad magic", expert.group.MALFORMED, expert.severity.ERROR),
    bad_version = ProtoExpert.new("qmig.expert.bad_version", "Unsupported version", expert.group.MALFORMED,
        expert.severity.ERROR),
    malformed = ProtoExpert.new("qmig.expert.malformed", "Malformed record", expert.group.MALFORMED,
        expert.severity.ERROR),
    truncated = ProtoExpert.new("qmig.expert.truncated",
        "Captured bytes end inside a record header (snaplen); walking of this stream direction stopped",
        expert.group.UNDECODED, expert.severity.WARN),
    no_reassembly = ProtoExpert.new("qmig.expert.no_reassembly",
        "Record header spans TCP segments but reassembly is off (tcp.desegment_tcp_streams); walking stopped",
        expert.group.REASSEMBLE, expert.severity.WARN),
    not_walked = ProtoExpert.new("qmig.expert.not_walked", "Stream not walked", expert.group.UNDECODED,
        expert.severity.NOTE),
    device = ProtoExpert.new("qmig.expert.device_state",
        "Device section body not decoded; its end was found by scanning for the section footer",
        expert.group.UNDECODED, expert.severity.CHAT),
    cut = ProtoExpert.new("qmig.expert.cut", "Record cut off by the end of the stream (truncated)",
        expert.group.UNDECODED, expert.severity.WARN),
    misclassified = ProtoExpert.new("qmig.expert.misclassified",
        "The destination gives this channel another role than its bytes say (preference qmig.policy)",
        expert.group.PROTOCOL, expert.severity.ERROR),
    missing = ProtoExpert.new("qmig.expert.missing",
        "Bytes of the stream missing before this segment; walking of this stream direction stopped",
        expert.group.SEQUENCE, expert.severity.WARN),
    refused = ProtoExpert.new("qmig.expert.refused",
        "The destination never takes this channel in (blocked peek or rejected; preference qmig.policy)",
        expert.group.PROTOCOL, expert.severity.ERROR),
}
qmig.experts = {E.bad_magic, E.bad_version, E.malformed, E.truncated, E.no_reassembly, E.not_walked, E.device, E.cut,
                E.misclassified, E.refused, E.missing}

qmig.prefs.port = Pref.uint("TCP port", 0, "Also decode this TCP port as QEMU migration (0: heuristic only)")
qmig.prefs.multifd_v1 = Pref.bool("Multifd 7.2-8.2 header layout", false,
    "Show multifd packet headers with the QEMU 7.2-8.2 layout (unused[4] instead of zero_pages)")

do -- the destination's channel assignment rules, by QEMU generation (migshark's analysis/policies.py)
    local choices = {}
    for i, name in ipairs(C.POLICIES) do choices[#choices + 1] = {i, name, i} end
    qmig.prefs.policy = Pref.enum("Destination QEMU generation", #C.POLICIES,
        "The rules by which the destination gives each accepted connection its role (qemu-7.2: accept order; "
        .. "qemu-8.0-10.0: peek for precopy multifd on plain sockets; qemu-10.1+: peek until main and every "
        .. "multifd channel exist). Decides qmig.channel.assigned and the misclassification expert info.",
        choices, false)
end

local f_retrans = Field.new("tcp.analysis.retransmission")
local f_spurious = Field.new("tcp.analysis.spurious_retransmission")
local f_seq = Field.new("tcp.seq")
local f_len = Field.new("tcp.len")
local f_stream = Field.new("tcp.stream")

local AFTER_FOOTER = {}
for _, t in ipairs(C.AFTER_FOOTER) do AFTER_FOOTER[t] = true end

local ENDING = UInt64.fromhex(C.RECV_BITMAP_ENDING_HEX)
local K = C.KIND -- record kinds by their name in migshark's channels/kinds.py

---------------------------------------------------------------------------------------------------
-- Reading with bounds: every read checks the captured length and raises {need = end} otherwise.

local NEED = {}
NEED.__index = NEED

local function need(n)
    error(setmetatable({need = n}, NEED), 0)
end

-- The captured bytes of ctx's tvb as one Lua string, read once per call: integers of up to 4 bytes are
-- read from it with string.byte (a TvbRange per read costs a userdata and two C calls).
local function bytes_of(ctx)
    local hay = ctx.hay
    if not hay then
        hay = ctx.tvb:raw(0, ctx.cap)
        ctx.hay = hay
    end
    return hay
end

local byte = string.byte
local BYTE = 0xff + 1

local function rd_uint(ctx, off, sz)
    if off + sz > ctx.cap then need(off + sz) end
    if sz == 8 then return ctx.tvb(off, 8):uint64() end
    local hay = ctx.hay or bytes_of(ctx)
    local v = 0
    for i = off + 1, off + sz do v = v * BYTE + byte(hay, i) end
    return v
end

local function num(v)
    if type(v) == "number" then return v end
    return v:tonumber()
end

local function low_mask64(width)
    if width >= 64 then return UInt64.fromhex("ffffffffffffffff") end
    return UInt64(1):lshift(width) - 1
end

local FLAG_BITS = C.FLAG_BITS

local function add_flag_bits(item, abbrev, range)
    local bits = FLAG_BITS[abbrev]
    if not bits or not item then return end
    for _, b in ipairs(bits) do item:add(F[b], range) end
end

-- ConditionalField predicates (by the Python predicate's name).
local COND = {
    has_idstr = function(vals)
        local f = vals.flags or 0
        return bit.band(f, C.RAM_FLAGS_WITH_BLOCK) ~= 0 and bit.band(f, C.RAM_FLAG_CONTINUE) == 0
    end,
}

-- Walk the generated layout `desc` from item `first`. Returns (offset after the walked part,
-- payload size, index of the item where walking stopped): the walk stops at a skippable payload
-- field (its size is returned) and at an element list without a count field (size nil).
local walk

local function walk_items(ctx, desc, off, tree, vals, first, list_count)
    local items = desc.items
    for i = first or 1, #items do
        local it = items[i]
        if it.cond == nil or COND[it.cond](vals) then
            local t = it.t
            if t == "u" then
                local v = rd_uint(ctx, off, it.sz)
                vals[it.n] = v
                if tree then
                    local r = ctx.tvb(off, it.sz)
                    local item = tree:add(F[it.f], r)
                    if FLAG_BITS[it.f] then add_flag_bits(item, it.f, r) end
                end
                off = off + it.sz
            elseif t == "bits" then
                local w = rd_uint(ctx, off, it.sz)
                for _, b in ipairs(it.bits) do
                    local v
                    if it.sz == 8 then
                        local x = w:rshift(b.shift):band(low_mask64(b.width))
                        if b.keep then x = x:lshift(b.shift) end
                        if b.fsz <= 4 then v = x:tonumber() else v = x end
                    else
                        v = bit.band(bit.rshift(w, b.shift), 2 ^ b.width - 1)
                        if b.keep then v = v * 2 ^ b.shift end
                    end
                    vals[b.n] = v
                    if tree then
                        local item = tree:add(F[b.f], ctx.tvb(off, it.sz), v)
                        if b.shift == 0 then add_flag_bits(item, b.f, ctx.tvb(off + it.sz - b.fsz, b.fsz)) end
                    end
                end
                off = off + it.sz
            elseif t == "s" or t == "z" or t == "b" then
                local sz = it.sz or num(vals[it.lf])
                if it.skip then return off, sz, i end
                if off + sz > ctx.cap then need(off + sz) end
                if t == "s" then
                    vals[it.n] = (ctx.hay or bytes_of(ctx)):sub(off + 1, off + sz)
                elseif t == "z" then
                    vals[it.n] = ctx.tvb(off, sz):stringz()
                end
                if tree and sz > 0 then tree:add(F[it.f], ctx.tvb(off, sz)) end
                off = off + sz
            elseif t == "list" then
                local total = it.cnt * it.esz
                if off + total > ctx.cap then need(off + total) end
                if tree then
                    local shown = math.min(list_count and list_count(vals) or 0, it.cnt)
                    local sub = tree:add(ctx.tvb(off, total), string.format("%s: %d of %d slots used", it.n, shown, it.cnt))
                    for k = 0, shown - 1 do sub:add(F[it.f], ctx.tvb(off + k * it.esz, it.esz)) end
                end
                off = off + total
            elseif t == "plist" then
                if not it.cf then return off, nil, i end
                for _ = 1, num(vals[it.cf]) do
                    local sub = tree and tree:add(ctx.tvb(off, 1), S[it.elem].name)
                    local start = off
                    off = walk(ctx, S[it.elem], off, sub, {})
                    if sub then sub:set_len(off - start) end
                end
            end
        end
    end
    return off, nil, nil
end
walk = walk_items

---------------------------------------------------------------------------------------------------
-- Per-connection state. A connection is keyed by its two endpoints ("address:port"), which the
-- dissector always has in pinfo: tcp.stream is a field, and fields are empty whenever tshark builds no
-- tree (the first pass of `tshark -2` without a display filter). dirs[layer .. " " .. source endpoint]
-- is the state of one direction: layer "tcp" for the bytes TCP gives, "tls" for the bytes Wireshark's
-- TLS dissector decrypted.

local dirs = {}
-- What a second pass (-2, the GUI's re-dissection of any frame) needs of each first-pass call, kept for
-- the whole capture, so kept small (docs/wireshark.md, "Memory"). A call is known by its slot: the frame
-- number for a frame's first call of its direction (nearly every call), else the string
-- "frame/direction/n". snapshots[slot] is the direction's state when the call began, without its
-- skip count: a read-only table shared by every call until one of its fields changes (base_of);
-- extras[slot] is the skip count when it is not 0, or {skip, order} when the sequence numbers said
-- something other than "walk" (seq_order), both rare.
local snapshots = {}
local extras = {}
-- The calls of the frame being dissected, per direction: each dissection of a frame (the first pass,
-- a second pass, every GUI re-dissection) counts them from 1 (reset by the postdissector).
local call_frame, call_dk, call_n, calls_more = nil, nil, 0, nil
local SEQ_SPACE = 4294967296          -- TCP's 32-bit sequence numbers wrap
-- Records whose payload (skipped by length) started on the first pass and never ended: at the end of
-- the stream they are "truncated", as `migshark dissect` says; shown so on a second pass (-2, GUI).
-- open_records[slot of the call where the record began] = its number in that call (one open record per
-- direction at a time).
local open_records = {}
-- RAM section ids seen on any main stream: a recovered main stream (postcopy recovery starts with
-- a RECV_BITMAP command, no header, no SECTION_START) continues the sections of the first one.
local ram_ids_seen = {}
-- Destinations (address:port) of the main channels seen: a stream to one of them that starts with RAM
-- records is the postcopy preempt channel, which has no magic of its own.
local migration_servers = {}
-- Connections per destination endpoint in the order the destination accepted them: the order of the
-- client's frame that follows the server's first one (the ACK completing the handshake, when the
-- capture holds it), as migshark orders them. conns[key] = {client, server, index (0-based, nil until
-- accepted), answered (the server has sent)}.
local conns = {}
local accepts = {}
-- Connections by tcp.stream number (when tshark builds a tree, fields have values), so that the endpoint
-- strings are built once per connection, at its stream's first frame (two strings and a key per frame
-- were most of the plugin's cost per connection on captures of many short ones): later frames are told
-- apart by port. accepted_streams[stream] = the entry in conns of a connection accepted already (the
-- postdissector has nothing to learn from its frames), pending[stream] = one not accepted yet,
-- server_ports[stream] = its server's port.
local accepted_streams = {}
local pending, server_ports = {}, {}
-- What the destination could see of each connection (client -> server direction), by connection key:
-- {role = true role, magic = "main" | "multifd" | "other" | nil (nothing sent), tls, recovered}.
local facts = {}
-- Counts changes to facts and accepts: verdicts worked out before a change are stale.
local facts_epoch = 0
-- stale_from[destination] = the lowest accept index (0-based) whose facts changed since its verdicts were
-- worked out: those of the connections before it still hold, and when it is past all of them (the only
-- change is connections accepted since, and what they sent) only those are judged (verdict).
local stale_from = {}
-- The verdicts per destination, with the epoch, pass and policy they were worked out for (verdict).
local verdicts = {}

local function reset_state()
    dirs = {}
    snapshots = {}
    extras = {}
    call_frame, call_dk, call_n, calls_more = nil, nil, 0, nil
    open_records = {}
    ram_ids_seen = {}
    migration_servers = {}
    conns = {}
    accepts = {}
    accepted_streams = {}
    pending, server_ports = {}, {}
    facts = {}
    facts_epoch = 0
    stale_from = {}
    verdicts = {}
end

function qmig.init()
    reset_state()
end

local function endpoint(addr, port)
    return tostring(addr) .. ":" .. port
end

local function conn_key(a, b)
    if a < b then return a .. " " .. b end
    return b .. " " .. a
end

local function accept(cn, key)
    local list = accepts[cn.server]
    if not list then
        list = {}
        accepts[cn.server] = list
    end
    list[#list + 1] = key
    cn.index = #list - 1
    facts_epoch = facts_epoch + 1
end

-- A fact of connection ckey changed (what it sent, TLS, postcopy): verdicts are stale, its destination's
-- from its place in the accept order on.
local function facts_changed(ckey)
    facts_epoch = facts_epoch + 1
    local cn = conns[ckey]
    local i = cn and cn.index
    if i ~= nil then
        local from = stale_from[cn.server]
        if from == nil or i < from then stale_from[cn.server] = i end
    end
end

-- Sees every frame on the first pass (a postdissector: the dissector sees no SYN or bare ACK) to learn
-- who opened each connection (the sender of its first frame) and the accept order.
local order_proto = Proto("qmig_order", "QEMU migration connection order")

local function last(...)
    local n = select("#", ...)
    if n > 0 then return (select(n, ...)) end
end

function order_proto.dissector(tvb, pinfo, tree)
    -- the end of each dissection of a frame: the GUI dissects a frame again and again (list, details),
    -- and each time the calls of that frame must count from 1 to find their snapshots
    if tvb then call_frame = nil end
    if pinfo.visited then return end
    local stream = last(f_stream())            -- the innermost TCP's, as pinfo's ports are
    if stream then
        stream = stream.value
        if accepted_streams[stream] then return end
    end
    local sp, dp = pinfo.src_port, pinfo.dst_port
    if sp == 0 or dp == 0 then return end
    local cn = stream and pending[stream]
    local key, from_server
    if cn then
        -- the frames of one stream have the same two endpoints: when their ports differ, the port says
        -- which one sent; when they are equal, only the address can
        if sp ~= dp then
            from_server = sp == server_ports[stream]
        else
            from_server = endpoint(pinfo.src, sp) == cn.server
        end
    else
        local src, dst = endpoint(pinfo.src, sp), endpoint(pinfo.dst, dp)
        key = conn_key(src, dst)
        cn = conns[key]
        if not cn then
            cn = {client = src, server = dst}
            conns[key] = cn
            if stream then pending[stream], server_ports[stream] = cn, dp end
            return
        end
        from_server = src == cn.server
        if stream then
            server_ports[stream] = from_server and sp or dp
            if cn.index == nil then pending[stream] = cn end
        end
    end
    if cn.index == nil then
        if from_server then
            cn.answered = true
        elseif cn.answered then
            accept(cn, key or conn_key(cn.client, cn.server))
        end
    end
    if stream and cn.index ~= nil then
        accepted_streams[stream] = cn
        pending[stream] = nil
    end
end

register_postdissector(order_proto)

-- ram_ids tables are never changed once made (apply makes a new one), so snapshots share them.
local NO_IDS = setmetatable({}, {__newindex = function() error("ram_ids tables are read only") end})

local function new_state(chan, phase, dk)
    return {chan = chan, phase = phase, skip = 0, ram_ids = NO_IDS, dk = dk}
end

-- The fields of a direction's state a second pass reads, other than `skip` (which changes on nearly
-- every call). The first pass's own bookkeeping (pos, msp: sequence numbers; skip_slot, skip_nrec: the
-- open record; judged; base) is not kept.
local BASE_FIELDS = {"dk", "chan", "phase", "ram_ids", "recovered", "noted", "started", "dev_id", "mfd_id",
                     "postcopy", "eof", "tail", "skip_total", "skip_f", "skip_label", "unordered"}
local N_BASE = #BASE_FIELDS

-- The snapshot of st's fields other than skip: the one taken last for this direction while none of
-- them changed (an idle direction's calls all share one), else a new read-only table.
local function base_of(st)
    local b = st.base
    if b then
        for i = 1, N_BASE do
            local k = BASE_FIELDS[i]
            if b[k] ~= st[k] then
                b = nil
                break
            end
        end
        if b then return b end
    end
    b = {}
    for i = 1, N_BASE do
        local k = BASE_FIELDS[i]
        b[k] = st[k]
    end
    st.base = b
    return b
end

-- A state to walk with on a second pass, from a call's snapshot and skip count.
local function from_snapshot(b, skip)
    local st = {}
    for k, v in pairs(b) do st[k] = v end
    st.skip = skip
    return st
end

---------------------------------------------------------------------------------------------------
-- Record handlers, one per phase. Each returns a result table:
--   off (end of the walked header), kind, label, phase (next), skip (payload bytes after off),
--   skip_f (field to show a complete payload as), tail ({cls, idx}: items left after the payload),
--   ram_id / dev_id, bad + expert (stop walking), warn (malformed but continue).
-- They are called twice per record: first without a tree to learn whether the header is complete
-- (a read past the captured bytes raises {need = n}), then with the tree. They never touch `st`.

local H = {}

local function record_item(ctx, tree, off, kind)
    if not tree then return nil end
    local range = ctx.tvb(off, math.min(1, ctx.cap - off))
    if ctx.cut then -- its payload never ended on the first pass: the stream ends inside it
        local item = tree:add(MF.record, range, K.TRUNCATED)
        item:append_text(" (" .. kind .. " cut off by the end of the stream)")
        item:add_proto_expert_info(E.cut)
        return item
    end
    return tree:add(MF.record, range, kind)
end

local function header_check(r, vals, magic, version)
    if vals.magic ~= magic then
        r.bad, r.expert = string.format("bad magic 0x%08x", vals.magic), E.bad_magic
    elseif vals.version ~= version then
        r.bad, r.expert = string.format("unsupported version %d", vals.version), E.bad_version
    end
end

H.header = function(ctx, st, off, tree)
    local sub = record_item(ctx, tree, off, K.MAIN_HEADER)
    local vals = {}
    local o = walk(ctx, S.QemuFileHeader, off, sub, vals)
    local r = {off = o, kind = K.MAIN_HEADER, phase = "records", sub = sub}
    header_check(r, vals, C.QEMU_VM_FILE_MAGIC, C.QEMU_VM_FILE_VERSION)
    return r
end

local function command(ctx, off, o, sub, vals, r)
    local cmd, len = vals.cmd, vals.len
    if o + len > ctx.cap then need(o + len) end
    local name = C.MIG_CMDS[cmd] or string.format("0x%04x", cmd)
    r.label = "cmd " .. name
    local allowed = C.CMD_LENGTHS[cmd]
    if allowed then
        local ok = false
        for _, n in ipairs(allowed) do if n == len then ok = true end end
        if not ok then r.warn = string.format("length %d is not valid for %s", len, name) end
    end
    if cmd == C.CMD_POSTCOPY_ADVISE then r.postcopy = true end
    local pcls = C.CMD_PAYLOAD[cmd]
    if pcls and len > 0 then
        local pv = {}
        local po, _, stop = walk(ctx, S[pcls], o, sub, pv)
        if stop then -- a list running to the end of the command (discard ranges)
            local elem = S[S[pcls].items[stop].elem]
            while po + elem.size <= o + len do
                local esub = sub and sub:add(ctx.tvb(po, elem.size), elem.name)
                po = walk(ctx, elem, po, esub, {})
            end
        end
        if po ~= o + len then r.warn = string.format("%s payload is %d bytes, length says %d", name, po - o, len) end
        if pv.value then r.label = r.label .. " " .. pv.value end
        if cmd == C.CMD_PACKAGED and pv.length then
            r.label = r.label .. string.format(" (%d bytes of records follow)", pv.length)
        end
    elseif len > 0 and sub then
        sub:add(MF.data, ctx.tvb(o, len))
    end
    r.off = o + len
end

H.records = function(ctx, st, off, tree)
    local tv = {}
    walk(ctx, S.MainRecord, off, nil, tv)
    local t = tv.type
    local cls = C.REC[t]
    -- After EOF only one VMDESCRIPTION may come (as in the Python parser): anything else is one
    -- malformed run of trailing bytes, not a record per byte (zeros read as EOF records).
    if st.eof == "desc" or (st.eof and t ~= C.REC_VMDESC) then
        return {off = off, bad = "bytes after the end of the migration stream (EOF)", expert = E.malformed}
    end
    if not cls then
        return {off = off, bad = string.format("unknown record type 0x%02x", t), expert = E.malformed}
    end
    local kind = C.MAIN_KIND[t]
    local sub = record_item(ctx, tree, off, kind)
    local vals = {}
    local o, skip, stop = walk(ctx, S[cls], off, sub, vals)
    local r = {off = o, kind = kind, sub = sub}
    if t == C.REC_EOF then r.eof = true elseif t == C.REC_VMDESC and st.eof then r.eof = "desc" end
    if t == C.REC_START or t == C.REC_FULL then
        r.label = string.format("%s %s id %d", kind, vals.idstr, vals.section_id)
        if vals.idstr == C.RAM_SECTION_IDSTR then
            r.ram_id, r.phase = vals.section_id, "ram"
        else
            r.dev_id, r.phase = vals.section_id, "device"
        end
    elseif t == C.REC_PART or t == C.REC_END then
        r.label = string.format("%s id %d", kind, vals.section_id)
        if st.ram_ids[vals.section_id] or (st.recovered and ram_ids_seen[vals.section_id]) then
            r.phase = "ram"
        else
            r.dev_id, r.phase = vals.section_id, "device"
        end
    elseif t == C.REC_SUBSECTION then
        local body = C.CONFIG_BODIES[vals.idstr]
        r.label = kind .. " " .. vals.idstr
        if body then
            local bo, _, bstop = walk(ctx, S[body], o, sub, {})
            if bstop then return {off = off, bad = "subsection body with an unbounded list", expert = E.malformed} end
            r.off = bo
        else
            r.bad, r.expert = "unknown subsection " .. vals.idstr .. ": its body cannot be walked", E.not_walked
        end
    elseif t == C.REC_COMMAND then
        command(ctx, off, o, sub, vals, r)
    elseif skip then
        r.skip, r.skip_f = skip, S[cls].items[stop].f
    end
    return r
end

local function mem_size(ctx, o, sub, vals, r)
    local remaining = num(vals.addr)
    local blocks = 0
    local lead = S.RamBlockInfo.items[1] -- a block's idstr length, never 0
    local extra = C.MEM_SIZE_EXTRA_SIZE
    while remaining > 0 do
        local first = rd_uint(ctx, o, lead.sz)
        if first == 0 then -- an optional be64 (postcopy page size / ignore-shared address)
            rd_uint(ctx, o, extra)
            if sub then sub:add(MF.data, ctx.tvb(o, extra)):append_text(" (optional be64 after a block)") end
            o = o + extra
        else
            local bv = {}
            local bsub = sub and sub:add(ctx.tvb(o, 1), S.RamBlockInfo.name)
            local bo = walk(ctx, S.RamBlockInfo, o, bsub, bv)
            if bsub then bsub:set_len(bo - o) end
            remaining = remaining - num(bv.used_length)
            o = bo
            blocks = blocks + 1
            if blocks > C.MAX_MEM_SIZE_BLOCKS or remaining < 0 then
                r.bad, r.expert = "MEM_SIZE block lengths do not add up to the total", E.malformed
                break
            end
        end
    end
    r.label = string.format("%s %d blocks", K.RAM_MEM_SIZE, blocks)
    r.off = o
end

H.ram = function(ctx, st, off, tree)
    local vals = {}
    walk(ctx, S.RamRecord, off, nil, vals)
    local kind_bits = bit.band(vals.flags, bit.bnot(C.RAM_FLAG_CONTINUE))
    local kind = C.RAM_KIND[kind_bits] or K.MALFORMED -- flags of no kind (FULL, HOOK, several) are refused below
    local sub = record_item(ctx, tree, off, kind)
    local o = walk(ctx, S.RamRecord, off, sub, vals)
    local r = {off = o, kind = kind, sub = sub}
    if kind_bits == C.RAM_FLAG_EOS then
        r.phase = st.chan == "preempt" and "ram" or "records"   -- a preempt channel is RAM records only
    elseif kind_bits == C.RAM_FLAG_MULTIFD_FLUSH then
        r.phase = "ram"
    elseif kind_bits == C.RAM_FLAG_MEM_SIZE then
        mem_size(ctx, o, sub, vals, r)
    elseif C.RAM_PAYLOAD[kind_bits] then
        local pcls = C.RAM_PAYLOAD[kind_bits]
        local po, skip, stop = walk(ctx, S[pcls], o, sub, {})
        r.off = po
        if skip then r.skip, r.skip_f = skip, S[pcls].items[stop].f end
    else
        r.bad, r.expert = string.format("unknown RAM record flags 0x%03x", vals.flags), E.malformed
    end
    return r
end

H.hello = function(ctx, st, off, tree)
    local sub = record_item(ctx, tree, off, K.MULTIFD_HELLO)
    local vals = {}
    local o = walk(ctx, S.MultifdHello, off, sub, vals)
    local r = {off = o, kind = K.MULTIFD_HELLO, phase = "mfd", sub = sub, mfd_id = vals.id,
               label = string.format("%s channel %d", K.MULTIFD_HELLO, vals.id)}
    header_check(r, vals, C.MULTIFD_MAGIC, C.MULTIFD_VERSION)
    return r
end

H.mfd = function(ctx, st, off, tree)
    local hv = {}
    walk(ctx, S.MultifdPacketHdr, off, nil, hv)
    local flags = hv.flags
    local r = {off = off}
    header_check(r, hv, C.MULTIFD_MAGIC, C.MULTIFD_VERSION)
    if r.bad then return r end
    local vals = {}
    if bit.band(flags, C.MULTIFD_FLAG_DEVICE_STATE) ~= 0 then
        r.kind = K.MULTIFD_DEVICE_STATE
        r.sub = record_item(ctx, tree, off, r.kind)
        r.off = walk(ctx, S.MultifdDeviceStatePacket, off, r.sub, vals)
        r.skip = vals.next_packet_size
        r.label = r.kind .. " " .. vals.idstr
        return r
    end
    local layout = qmig.prefs.multifd_v1 and S.MultifdRamPacketV1 or S.MultifdRamPacket
    r.kind = bit.band(flags, C.MULTIFD_FLAG_SYNC) ~= 0 and K.MULTIFD_SYNC or K.MULTIFD_PACKET
    r.sub = record_item(ctx, tree, off, r.kind)
    r.off = walk(ctx, layout, off, r.sub, vals, nil, function(v) return (v.normal_pages or 0) + (v.zero_pages or 0) end)
    local normal = vals.normal_pages
    -- data after the header, as the receiver reads it: nothing without normal pages; otherwise the
    -- pages (no compression) or next_packet_size bytes (compressed)
    if normal == 0 then
        r.skip = 0
    elseif bit.band(flags, C.MULTIFD_FLAG_COMPRESSION_MASK) ~= 0 then
        r.skip = vals.next_packet_size
    else
        r.skip = normal * C.TARGET_PAGE_SIZE
    end
    r.label = string.format("%s #%s %d pages", r.kind, tostring(vals.packet_num), normal)
    return r
end

H.rp = function(ctx, st, off, tree)
    local vals = {}
    walk(ctx, S.RpMessage, off, nil, vals)
    local typ, len = vals.type, vals.len
    local kind = C.RP_KIND[typ] or K.MALFORMED -- INVALID and unknown types are refused below
    local sub = record_item(ctx, tree, off, kind)
    local o = walk(ctx, S.RpMessage, off, sub, vals)
    local r = {off = o, kind = kind, sub = sub}
    local fixed = C.RP_LENGTHS[typ]
    if typ == C.RP_INVALID or not C.RP_TYPES[typ] or (fixed and fixed ~= len) then
        r.bad = string.format("invalid message 0x%04x length 0x%04x", typ, len)
        r.expert = E.malformed
        return r
    end
    if o + len > ctx.cap then need(o + len) end
    local pcls = C.RP_PAYLOAD[typ]
    local pv = {}
    if pcls then
        local po = walk(ctx, S[pcls], o, sub, pv)
        if po ~= o + len then r.warn = string.format("payload is %d bytes, length says %d", po - o, len) end
    end
    r.off = o + len
    r.label = kind .. (pv.value and (" " .. pv.value) or "") .. (pv.start and (" 0x" .. pv.start:tohex()) or "")
    if typ == C.RP_RECV_BITMAP then -- the bitmap dump follows outside len
        local dv = {}
        local dsub = sub
        local d_o, skip, stop = walk(ctx, S.RecvBitmapDump, r.off, dsub, dv)
        r.off, r.skip, r.skip_f = d_o, skip, S.RecvBitmapDump.items[stop].f
        r.tail = {cls = "RecvBitmapDump", idx = stop + 1, back = "rp", kind = kind}
    end
    return r
end

H.tail = function(ctx, st, off, tree)
    local tail = st.tail
    -- the rest of a record after its skipped payload: the same record (one record for dissect -t too)
    local sub = tree and tree:add(MF.continued, ctx.tvb(off, math.min(1, ctx.cap - off)), tail.kind)
    if sub then sub:append_text(" (" .. S[tail.cls].name .. ")") end
    local vals = {}
    local o = walk(ctx, S[tail.cls], off, sub, vals, tail.idx)
    local r = {off = o, kind = tail.kind, phase = tail.back, sub = sub, tail = false, continued = true}
    if vals.ending and vals.ending ~= ENDING then r.warn = "bitmap ending is not " .. C.RECV_BITMAP_ENDING_HEX end
    return r
end

---------------------------------------------------------------------------------------------------
-- The driver: walk one tvb of a stream direction.

local function run_handler(ctx, st, off, tree)
    local h = H[st.phase]
    local ok, r = pcall(h, ctx, st, off, nil)
    if not ok then
        if getmetatable(r) == NEED then return {need = r.need} end
        error(r, 0)
    end
    if tree == nil then return r end            -- nothing to show (lean: see dissect)
    return h(ctx, st, off, tree)
end

local function stop_walking(st, root, expert_info, text)
    st.phase = "lost"
    if root then root:add_proto_expert_info(expert_info, text) end
end

-- The bytes of the footer of section `id`, laid out as S.SectionFooter (its type byte, then the id;
-- big-endian integers of up to 4 bytes).
local function footer_bytes(id)
    local vals = {type = C.REC_FOOTER, section_id = id}
    local out = {}
    for _, it in ipairs(S.SectionFooter.items) do
        for k = it.sz - 1, 0, -1 do out[#out + 1] = string.char(bit.band(bit.rshift(vals[it.n], 8 * k), 0xff)) end
    end
    return table.concat(out)
end

-- Find the footer of device section `id` in the captured bytes from `off`: the footer bytes, then a
-- record type that may follow a footer. Returns (position, "found" | "tail" | "none").
local function scan_device(ctx, off, id)
    local hay = ctx.hay or bytes_of(ctx)        -- the whole tvb: positions are offsets + 1
    local pat = footer_bytes(id)
    local len = #pat
    local from = off + 1
    while true do
        local p = string.find(hay, pat, from, true)
        if not p then break end
        if p + len > #hay then return p - 1, "tail" end
        if AFTER_FOOTER[hay:byte(p + len)] then return p - 1, "found" end
        from = p + 1
    end
    for k = math.max(off + 1, #hay - len + 1), #hay do
        if hay:byte(k) == pat:byte(1) then return k - 1, "tail" end
    end
    return ctx.cap, "none"
end

local function apply(st, r)
    if r.phase then st.phase = r.phase end
    if r.ram_id then
        if not st.ram_ids[r.ram_id] then -- a new table: snapshots share the old one
            local ids = {}
            for k, v in pairs(st.ram_ids) do ids[k] = v end
            ids[r.ram_id] = true
            st.ram_ids = ids
        end
        ram_ids_seen[r.ram_id] = true
    end
    if r.dev_id then st.dev_id = r.dev_id end
    if r.mfd_id then st.mfd_id = r.mfd_id end
    if r.postcopy then st.postcopy = true end
    if r.eof then st.eof = r.eof end
    if r.tail ~= nil then st.tail = r.tail or nil end
end

-- Runs of zero-page records: an idle guest's precopy is long runs of ZERO|CONTINUE records (the RamRecord
-- word, then RamZero's fill byte), as migshark's channels/ram_walk.py says. A run of at least
-- C.ZERO_RUN_MIN of them in one call is one K.RAM_ZERO record item with the run's length and first and
-- last page addresses (qmig.zero_run.*), found by looking at the flag bytes of each record only.
local ZERO_WORD = S.RamRecord.items[1]                  -- the addr+flags word
local ZERO_SIZE = ZERO_WORD.sz + S.RamZero.size
-- (1-based position in a record, byte -> true when its flag bits are those of ZERO|CONTINUE)
local ZERO_CHECKS = {}
do
    local flags
    for _, b in ipairs(ZERO_WORD.bits) do if b.shift == 0 then flags = b end end
    local want = bit.bor(C.RAM_FLAG_ZERO, C.RAM_FLAG_CONTINUE)
    for j = 0, ZERO_WORD.sz - 1 do                      -- byte j from the word's end
        local lo = 8 * j
        if lo < flags.width then
            local mask = bit.band(bit.rshift(2 ^ flags.width - 1, lo), 0xff)
            local wb = bit.band(bit.rshift(want, lo), 0xff)
            local ok = {}
            for v = 0, 0xff do ok[v] = bit.band(v, mask) == wb end
            ZERO_CHECKS[#ZERO_CHECKS + 1] = {ZERO_WORD.sz - j, ok}
        end
    end
end

-- How many whole zero-page records follow `off` in the captured bytes.
local function zero_run(ctx, off)
    if ctx.run_at == off then return ctx.run_n end
    local hay = ctx.hay or bytes_of(ctx)
    local checks, nchecks = ZERO_CHECKS, #ZERO_CHECKS
    local n, p, last = 0, off, ctx.cap - ZERO_SIZE
    while p <= last do
        for i = 1, nchecks do
            local c = checks[i]
            if not c[2][byte(hay, p + c[1])] then
                ctx.run_at, ctx.run_n = off, n
                return n
            end
        end
        n = n + 1
        p = p + ZERO_SIZE
    end
    ctx.run_at, ctx.run_n = off, n
    return n
end

local function zero_run_item(ctx, root, off, n)
    local len = n * ZERO_SIZE
    local first, last = {}, {}
    walk(ctx, S.RamRecord, off, nil, first)
    walk(ctx, S.RamRecord, off + len - ZERO_SIZE, nil, last)
    local item = root:add(MF.record, ctx.tvb(off, len), K.RAM_ZERO)
    item:append_text(string.format(" (%d zero pages, 0x%s..0x%s)", n, first.addr:tohex(), last.addr:tohex()))
    item:add(MF.zero_pages, ctx.tvb(off, len), n)
    item:add(MF.zero_first, ctx.tvb(off, ZERO_WORD.sz), first.addr)
    item:add(MF.zero_last, ctx.tvb(off + len - ZERO_SIZE, ZERO_WORD.sz), last.addr)
    return off + len
end

-- One walk's context, reused by every call (calls never nest): no table per call for the collector.
local CTX = {}

local function walk_tvb(tvb, pinfo, root, st, kinds, slot, start, lean)
    local ctx = CTX
    ctx.tvb, ctx.cap, ctx.rep = tvb, tvb:captured_len(), tvb:reported_len()
    ctx.hay, ctx.run_at, ctx.run_n, ctx.cut = nil, nil, nil, nil
    local visited = pinfo.visited
    local nrec = 0
    local off = start or 0
    while off < ctx.rep do
        if st.skip > 0 then
            local n = math.min(st.skip, ctx.rep - off)
            local shown = math.max(0, math.min(n, ctx.cap - off))
            if shown > 0 and not lean then
                if st.skip_f and n == st.skip_total and shown == n then
                    root:add(F[st.skip_f], tvb(off, n))
                else
                    root:add(MF.data, tvb(off, shown)):append_text(string.format(
                        " (%s: %d of %d bytes; %d left after this)", st.skip_label or "payload", n, st.skip_total,
                        st.skip - n))
                end
            end
            off = off + n
            st.skip = st.skip - n
            if st.skip == 0 then
                local open = st.skip_slot
                if open ~= nil and not visited and open_records[open] == st.skip_nrec then open_records[open] = nil end
                st.skip_slot, st.skip_nrec = nil, nil
                if st.tail then st.phase = "tail" end
            end
        elseif st.phase == "lost" or st.phase == "unknown" then
            if off < ctx.cap and not lean then root:add(MF.opaque, tvb(off, ctx.cap - off)) end
            off = ctx.rep
        elseif st.phase == "device" then
            if off >= ctx.cap then
                stop_walking(st, root, E.truncated, "capture truncated inside a device section")
            else
                local pos, how = scan_device(ctx, off, st.dev_id)
                if pos > off then
                    (lean and root or root:add(MF.device, tvb(off, pos - off))):add_proto_expert_info(E.device)
                    kinds[#kinds + 1] = K.DEVICE_STATE
                end
                off = pos
                if how == "found" then
                    st.phase = "records"
                elseif how == "tail" then
                    if ctx.cap < ctx.rep then
                        off = ctx.rep -- cannot look further: keep scanning in the next segment
                    elseif pinfo.can_desegment > 0 then
                        pinfo.desegment_offset = off
                        pinfo.desegment_len = DESEGMENT_ONE_MORE_SEGMENT
                        return
                    else
                        if not lean then root:add(MF.device, tvb(off, ctx.cap - off)) end
                        off = ctx.rep
                    end
                elseif ctx.cap < ctx.rep then
                    off = ctx.rep -- the footer may be in the missing bytes; keep scanning anyway
                end
            end
        elseif off >= ctx.cap then
            stop_walking(st, root, E.truncated, "capture truncated (snaplen) inside the stream")
        elseif st.phase == "ram" and zero_run(ctx, off) >= C.ZERO_RUN_MIN then
            local n = zero_run(ctx, off)
            nrec = nrec + 1
            off = lean and off + n * ZERO_SIZE or zero_run_item(ctx, root, off, n)
            kinds[#kinds + 1] = K.RAM_ZERO
            kinds.extra = kinds.extra or {}
            kinds.extra[K.RAM_ZERO] = (kinds.extra[K.RAM_ZERO] or 0) + n - 1
        else
            nrec = nrec + 1
            ctx.cut = visited and open_records[slot] == nrec
            local r = run_handler(ctx, st, off, not lean and root or nil)
            if r.need then
                if ctx.cap < ctx.rep then
                    stop_walking(st, root, E.truncated, "capture truncated (snaplen) inside a record header")
                    if not lean then root:add(MF.opaque, tvb(off, ctx.cap - off)) end
                    return
                elseif pinfo.can_desegment > 0 then
                    pinfo.desegment_offset = off
                    -- ask for whole segments: exact byte counts can split a frame into several
                    -- reassembled calls, which TCP does not repeat the same way on a second pass
                    pinfo.desegment_len = DESEGMENT_ONE_MORE_SEGMENT
                    return
                else
                    stop_walking(st, root, E.no_reassembly, "record header spans TCP segments")
                    if not lean then root:add(MF.opaque, tvb(off, ctx.cap - off)) end
                    return
                end
            end
            if r.sub then
                r.sub:set_len(math.max(0, math.min(r.off, ctx.cap) - off))
                if r.label then r.sub:append_text(" (" .. r.label .. ")") end
                if r.warn then r.sub:add_proto_expert_info(E.malformed, r.warn) end
            elseif lean then            -- the expert infos the record item would carry
                if r.warn then root:add_proto_expert_info(E.malformed, r.warn) end
                if ctx.cut then root:add_proto_expert_info(E.cut) end
            end
            if r.bad then
                stop_walking(st, r.sub or root, r.expert or E.malformed, r.bad)
                if r.off <= off and off < ctx.cap and not lean then root:add(MF.opaque, tvb(off, ctx.cap - off)) end
                return
            end
            if ctx.cut then
                kinds[#kinds + 1] = K.TRUNCATED
            elseif not r.continued then
                kinds[#kinds + 1] = r.label or r.kind
            end
            apply(st, r)
            off = r.off
            if r.skip and r.skip > 0 then
                st.skip, st.skip_total, st.skip_f = r.skip, r.skip, r.skip_f
                st.skip_label = r.kind
                if not visited then
                    st.skip_slot, st.skip_nrec = slot, nrec
                    open_records[slot] = nrec
                end
            elseif r.tail then
                st.phase = "tail"
            end
        end
    end
end

---------------------------------------------------------------------------------------------------
-- Classification of a stream direction by its first bytes, and the dissector entry points.

local function starts_with(tvb, list)
    if tvb:captured_len() < #list then return false end
    for i, b in ipairs(list) do
        if tvb(i - 1, 1):uint() ~= b then return false end
    end
    return true
end

-- The first bytes as `cls` (magic + version), or nil when not captured.
local function peek(tvb, cls)
    local ctx = {tvb = tvb, cap = tvb:captured_len()}
    local vals = {}
    local ok = pcall(walk, ctx, S[cls], 0, nil, vals)
    return ok and vals or nil
end

-- Does the stream start like a RAM record (a block-naming record with a printable block name, or a
-- lone EOS / MULTIFD_FLUSH word)? The same test as channels.identify.looks_like_ram_record; the word
-- and the block name are read as S.RamRecord, as far as they are captured.
local function looks_like_ram(tvb)
    local ctx = {tvb = tvb, cap = tvb:captured_len()}
    local vals = {}
    pcall(walk, ctx, S.RamRecord, 0, nil, vals)
    local flags = vals.flags
    if flags == nil then return false end        -- the word is not captured
    local kind = bit.band(flags, bit.bnot(C.RAM_FLAG_CONTINUE))
    if kind == C.RAM_FLAG_EOS or kind == C.RAM_FLAG_MULTIFD_FLUSH then
        return num(vals.addr) == 0 and flags == kind
    end
    if kind == 0 or bit.band(kind, bit.bnot(C.RAM_FLAGS_WITH_BLOCK)) ~= 0 or bit.band(kind, kind - 1) ~= 0
            or flags ~= kind then
        return false
    end
    local name = vals.idstr                      -- nil unless the whole name is captured
    if not name or #name == 0 then return false end
    for i = 1, #name do
        local c = name:byte(i)
        if c <= 0x20 or c >= 0x7F then return false end
    end
    return true
end

local function classify(tvb, other, forced, server)
    local file = peek(tvb, "QemuFileHeader")
    if file and file.magic == C.QEMU_VM_FILE_MAGIC and (forced or file.version == C.QEMU_VM_FILE_VERSION) then
        return "main", "header"
    end
    local hello = peek(tvb, "MultifdPacketHdr")
    if hello and hello.magic == C.MULTIFD_MAGIC and (forced or hello.version == C.MULTIFD_VERSION) then
        return "multifd", "hello"
    end
    if starts_with(tvb, C.RECOVERY_START) then return "main", "records" end
    if other and other.chan == "main" then return "return-path", "rp" end
    if migration_servers[server] and looks_like_ram(tvb) then return "preempt", "ram" end
    if forced then return "unknown", "unknown" end
    return nil
end

local function summary(kinds)
    local n = #kinds
    if n == 0 then return "" end
    if n == 1 and not kinds.extra then return kinds[1] end
    local counts, order = {}, {}
    for i = 1, n do
        local k = kinds[i]
        local c = counts[k]
        if c then counts[k] = c + 1 else order[#order + 1] = k; counts[k] = 1 end
    end
    for k, extra in pairs(kinds.extra or {}) do counts[k] = counts[k] + extra end   -- records of zero-page runs
    for i, k in ipairs(order) do
        if i > 6 then
            order[i] = "..."
            for j = #order, i + 1, -1 do order[j] = nil end
            break
        end
        if counts[k] > 1 then order[i] = string.format("%s x%d", k, counts[k]) end
    end
    return table.concat(order, ", ")
end

---------------------------------------------------------------------------------------------------
-- The destination's verdict: the role it gives each connection under the rules of one QEMU
-- generation (preference qmig.policy), from the accept order and what it could peek of each
-- connection. The same rules as migshark's analysis/policies.py, which stays the reference.

local R = C.ROLE
local BEHIND_PEEK = "queued behind the blocked peek: the destination never takes it in"

local function positional(is_main, setup)
    if is_main then return R.MAIN end
    if setup.multifd > 0 then return R.MULTIFD end
    return R.PREEMPT
end

local POLICY = {}

-- Each rule fills roles[i] and whys[i] (nil: no reason to give) for the connections order[first..n], in
-- accept order, going on from `scan` (what the rule has seen of the connections before `first`: have_main,
-- multifd, blocked), which it leaves as it is after n.
POLICY["qemu-7.2"] = function(order, first, n, setup, roles, whys, scan)
    for i = first, n do roles[i], whys[i] = positional(i == 1, setup), nil end
end

POLICY["qemu-8.0-10.0"] = function(order, first, n, setup, roles, whys, scan)
    local peek = setup.multifd > 0 and not setup.postcopy
    local have_main, blocked = scan.have_main, scan.blocked
    for i = first, n do
        local c = order[i]
        if blocked then
            roles[i], whys[i] = R.BLOCKED, BEHIND_PEEK
        elseif peek and not c.tls and c.magic == nil then
            roles[i], whys[i] = R.BLOCKED, "the peek loop waits for 4 bytes that never come (main loop stalls)"
            blocked = true
        else
            local is_main = not have_main
            if peek and not c.tls then is_main = c.magic == R.MAIN end
            roles[i], whys[i] = positional(is_main, setup), nil
            have_main = have_main or is_main
        end
    end
    scan.have_main, scan.blocked = have_main, blocked
end

POLICY["qemu-10.1+"] = function(order, first, n, setup, roles, whys, scan)
    local have_main, multifd, blocked = scan.have_main, scan.multifd, scan.blocked
    for i = first, n do
        local c = order[i]
        local role, why
        if blocked then
            role, why = R.BLOCKED, BEHIND_PEEK
        elseif have_main and multifd >= setup.multifd then
            role = R.PREEMPT
        elseif not c.tls then
            if c.magic == nil then
                role, why = R.BLOCKED, "the peek waits in the main thread for 4 bytes that come only once "
                    .. "postcopy sends on it (QMP hangs; at teardown: Failed to peek at channel)"
                blocked = true
            elseif c.magic == R.MAIN or c.magic == R.MULTIFD then
                role = c.magic
            elseif not have_main and setup.recovery then
                role = R.MAIN
            else
                role, why = R.REJECTED, "unknown channel magic"
            end
        elseif have_main and setup.multifd > 0 then
            role = R.MULTIFD
        elseif not have_main then
            role = R.MAIN
        else
            role, why = R.REJECTED, "non-peekable channel used without multifd"
        end
        roles[i], whys[i] = role, why
        if role == R.MAIN then
            have_main = true
        elseif role == R.MULTIFD then
            multifd = multifd + 1
        end
    end
    scan.have_main, scan.multifd, scan.blocked = have_main, multifd, blocked
end

-- The verdict on connection `ckey`: its assignment and the policy's name. On a second pass (-2, the
-- GUI) the whole capture is known; on the first pass there is a verdict only once every connection to
-- the destination seen so far has sent its first bytes (the rules depend on all of them).
-- Past C.VERDICT_MAX connections to one destination there is no verdict (hostile captures stay linear).
local VERDICT_MAX = C.VERDICT_MAX

local NO_FACTS = {}
-- Reused by every judgement (the first pass judges again after each new connection: no garbage).
local ORDER, SETUP = {}, {}

-- Fill v.roles and v.whys (arrays in accept order, reused) for the connections to `server` from the
-- first'th in accept order on, going on from what v kept of the ones before (v.n of them judged, the
-- setup they make and the rule's scan); false when a verdict cannot be given yet. The rules give every
-- connection its role from the setup of all of them: when the new ones change it, all are judged again.
local function judge(server, visited, name, v, first)
    local acc = accepts[server]
    local n = math.min(#acc, VERDICT_MAX)
    local order = ORDER
    local multifd, postcopy, recovery = 0, false, false
    if first > 1 then multifd, postcopy, recovery = v.multifd, v.postcopy, v.recovery end
    for i = first, n do
        local k = acc[i]
        local f = facts[k]
        if not f then
            if not visited then return false end
            f = NO_FACTS
        elseif not visited and f.role == nil and f.magic == nil then
            return false
        end
        order[i] = f
        if f.role == R.MULTIFD then multifd = multifd + 1 end
        if f.role == R.PREEMPT or f.postcopy then postcopy = true end
        if f.recovered then recovery = true end
    end
    if first > 1 and (multifd ~= v.multifd or postcopy ~= v.postcopy or recovery ~= v.recovery) then
        return judge(server, visited, name, v, 1)
    end
    v.n, v.multifd, v.postcopy, v.recovery = n, multifd, postcopy, recovery
    local setup, scan = SETUP, v.scan
    setup.multifd, setup.postcopy, setup.recovery = multifd, postcopy, recovery
    if first == 1 then scan.have_main, scan.multifd, scan.blocked = false, 0, false end
    POLICY[name](order, first, n, setup, v.roles, v.whys, scan)
    return true
end

-- Returns (role, reason or nil, policy name), or nil. A destination's verdicts are worked out again only
-- when a fact, an accept (facts_changed) or the policy changed, or the pass: a second pass and the GUI
-- ask on every call, and the rules walk up to VERDICT_MAX connections. When the only change is
-- connections accepted since (and what they sent), only those are judged: the first pass asks once per
-- new connection, which made one destination's connections cost O(n) each.
local function verdict(ckey, visited)
    local cn = conns[ckey]
    if not cn or cn.index == nil or cn.index >= VERDICT_MAX then return nil end
    local name = C.POLICIES[qmig.prefs.policy] or C.POLICIES[#C.POLICIES]
    local server = cn.server
    local v = verdicts[server]
    if not v then
        v = {roles = {}, whys = {}, scan = {}}
        verdicts[server] = v
    end
    if not (v.epoch == facts_epoch and v.visited == visited and v.name == name) then
        local first = 1
        local stale = stale_from[server]
        if v.ok and v.visited == visited and v.name == name and (stale == nil or stale >= v.n) then
            first = v.n + 1
        end
        v.epoch, v.visited, v.name = facts_epoch, visited, name
        v.ok = judge(server, visited, name, v, first)
        stale_from[server] = nil
    end
    if not v.ok then return nil end
    local i = cn.index + 1
    return v.roles[i], v.whys[i], name
end

-- The channel a record belongs to, on every record of it; the verdict and its expert info (on the
-- channel's first frame) for the client -> server direction.
local function channel_items(root, z, st, ckey, layer, client_side, visited, lean)
    if st.mfd_id and not lean then root:add(MF.mfd_id, z, st.mfd_id):set_generated() end
    local cn = conns[ckey]
    if not cn or cn.index == nil then return end
    if not lean then
        root:add(MF.migration, z, cn.server):set_generated()
        root:add(MF.connection, z, cn.client):set_generated()
        if layer == "tls" then root:add(MF.tls, z, true):set_generated() end
        root:add(MF.accept, z, cn.index):set_generated()
    end
    local f = facts[ckey]
    if not (f and f.role) or f.role == R.UNKNOWN then return end
    -- a lean call shows the verdict only through the expert info of a channel's first judged call
    if lean and not (client_side and not (visited and st.started or not visited and st.judged)) then return end
    local role, why, policy = verdict(ckey, visited)
    if not role then return end
    local bad = role ~= f.role
    if not lean then
        root:add(MF.policy, z, policy):set_generated()
        root:add(MF.assigned, z, role):set_generated()
        root:add(MF.misclassified, z, bad):set_generated()
        if why then root:add(MF.why, z, why):set_generated() end
    end
    local first = (visited and not st.started) or (not visited and not st.judged)
    st.judged = true
    if bad and client_side and first then
        local text = string.format("%s channel (accepted #%d) is taken as %s under %s", f.role, cn.index, role, policy)
        if role == R.BLOCKED or role == R.REJECTED then
            root:add_proto_expert_info(E.refused, text .. ": " .. why)
        else
            root:add_proto_expert_info(E.misclassified, text)
        end
    end
end

local TLS_TYPES = {}
for _, t in ipairs(C.TLS_CONTENT_TYPES) do TLS_TYPES[t] = true end

-- Does this direction start like a TLS record (content type, version's major byte)?
local function looks_like_tls(tvb)
    if tvb:captured_len() < 2 then return false end
    local t, major = byte(tvb:raw(0, 2), 1, 2)
    return TLS_TYPES[t] == true and major == C.TLS_VERSION_MAJOR
end

-- A connection with data before the postdissector saw it accepted (no handshake in the capture).
local function note_conn(pinfo, ckey)
    if not conns[ckey] then order_proto.dissector(nil, pinfo, nil) end
    local cn = conns[ckey]
    if cn.index == nil then accept(cn, ckey) end
end

-- Where a call's bytes sit against what this direction's walk has read, by TCP sequence number. TCP's
-- retransmission flag is not enough: a segment that a path reordered is flagged "fast retransmission"
-- when its bytes come for the first time, a reassembled PDU carries the flags of the frame that
-- completed it, and TCP hands a reordered segment over in capture order when no reassembly is pending.
-- A whole segment starts at its tcp.seq; a reassembled PDU where this walk asked for more bytes
-- (st.msp, kept from the call that asked). Returns the action and the call's first sequence number:
-- nil (no tcp fields, as on a first pass without a tree: TCP's flags decide), "walk", "old" (every byte
-- read already), {skip = n} (its first n bytes read already), {hole = n} (n bytes not seen before it).
local function seq_order(tvb, st)
    local seq, len = f_seq(), f_len()
    if not seq or not len then
        st.pos, st.msp = nil, nil
        return nil, nil
    end
    local rep = tvb:reported_len()
    local start = st.msp
    if rep == len.value then start = seq.value end
    st.msp = nil
    local pos = st.pos
    if start == nil or pos == nil then return "walk", start end
    local d = (start - pos) % SEQ_SPACE
    if d >= SEQ_SPACE / 2 then d = d - SEQ_SPACE end
    if d + rep <= 0 then return "old", start end
    if d < 0 then return {skip = -d}, start end
    if d > 0 then return {hole = d}, start end
    return "walk", start
end

-- After a first-pass walk from sequence number `start`: where the next call's bytes should begin.
local function seq_advance(tvb, pinfo, st, start)
    if start == nil then
        st.pos = nil
    elseif pinfo.desegment_len > 0 then
        st.msp = (start + pinfo.desegment_offset) % SEQ_SPACE
        st.pos = st.msp
    else
        st.pos = (start + tvb:reported_len()) % SEQ_SPACE
    end
end

-- What the destination sees of a connection, from its client -> server direction's first bytes.
local function note_facts(ckey, src, chan, phase, st, layer)
    local cn = conns[ckey]
    if not cn or cn.client ~= src then return end
    local f = facts[ckey] or {}
    facts[ckey] = f
    facts_changed(ckey)
    if layer == "tls" then f.tls = true end
    f.role = chan
    if chan == "main" and phase == "header" then
        f.magic = R.MAIN
    elseif chan == "multifd" then
        f.magic = R.MULTIFD
    else
        f.magic = "other"
    end
    f.recovered = st and st.recovered or nil
end

-- layer: "tcp" (the heuristic on TCP), "tls" (the heuristic on decrypted TLS), or nil (Decode As and
-- the port pref, for tcp.port and tls.port: TLS's decrypted data when TCP's bytes were left to TLS).
local qmig_handle -- Dissector.get("qmig"), once qmig.dissector is set (below)

-- A lean call's protocol item, added only when an expert info needs it (the only use a lean call has).
local LazyRoot = {}
LazyRoot.__index = LazyRoot
local LAZY = setmetatable({}, LazyRoot)           -- reused by every lean call (calls never nest)

function LazyRoot:add_proto_expert_info(...)
    local item = self.item
    if not item then
        item = self.tree:add(qmig, self.tvb())
        self.item = item
    end
    return item:add_proto_expert_info(...)
end

-- This call's source and destination endpoints and its connection's key in conns: from the accepted
-- connection of its tcp.stream when there is one (its key is its entry in accepts), else built.
local function endpoints(pinfo)
    local sp, dp = pinfo.src_port, pinfo.dst_port
    local stream = last(f_stream())
    local cn = stream and accepted_streams[stream.value]
    if cn and sp ~= dp then
        local key = accepts[cn.server][cn.index + 1]
        if sp == server_ports[stream.value] then return cn.server, cn.client, key end
        return cn.client, cn.server, key
    end
    local src, dst = endpoint(pinfo.src, sp), endpoint(pinfo.dst, dp)
    return src, dst, conn_key(src, dst)
end

local function dissect(tvb, pinfo, tree, forced, layer)
    local src, dst, ckey = endpoints(pinfo)
    local visited, number = pinfo.visited, pinfo.number
    if not visited then note_conn(pinfo, ckey) end
    if layer == nil then
        layer = (dirs["tcp " .. src] == "tls" and not looks_like_tls(tvb)) and "tls" or "tcp"
    end
    local dk, rk = layer .. " " .. src, layer .. " " .. dst
    local seq_start
    if call_frame ~= number then call_frame, call_dk, call_n, calls_more = number, dk, 0, nil end
    local n
    if call_dk == dk then n = call_n + 1 else n = (calls_more and calls_more[dk] or 0) + 1 end
    local slot, order
    local st
    if visited then
        local snap = snapshots[number]
        if n == 1 and snap and snap.dk == dk then
            slot = number
        else
            slot = number .. "/" .. dk .. "/" .. n
            snap = snapshots[slot]
            if not snap then return 0 end
        end
        local extra = extras[slot]
        local skip = 0
        if type(extra) == "table" then
            skip, order = extra[1], extra[2]
        elseif extra then
            skip = extra
        elseif not snap.unordered then
            order = "walk"
        end
        st = from_snapshot(snap, skip)
    else
        st = dirs[dk]
        if st == nil then
            if layer == "tcp" and not forced and looks_like_tls(tvb) then
                -- Wireshark's TLS dissector takes this stream; its decrypted data comes back through
                -- the heuristic on TLS (with a key log: -o tls.keylog_file:FILE)
                dirs[dk] = "tls"
                local cn = conns[ckey]
                if cn and cn.client == src then
                    facts[ckey] = facts[ckey] or {}
                    facts[ckey].tls = true
                    facts_changed(ckey)
                end
                return 0
            end
            local chan, phase = classify(tvb, dirs[rk], forced, dst)
            if not chan then
                dirs[dk] = false
                if not facts[ckey] then note_facts(ckey, src, nil, nil, nil, layer) end
                return 0
            end
            if chan == "main" then migration_servers[dst] = true end
            st = new_state(chan, phase, dk)
            st.recovered = chan == "main" and phase == "records"
            dirs[dk] = st
            note_facts(ckey, src, chan, phase, st, layer)
        elseif st == false or st == "tls" then
            if not forced or st == "tls" then return 0 end
            st = new_state("unknown", "unknown", dk)
            dirs[dk] = st
            note_facts(ckey, src, R.UNKNOWN, nil, st, layer)
        end
        seq_start = nil
        -- TCP's bytes only: decrypted TLS data has no place in TCP's sequence space
        if layer == "tcp" and st.phase ~= "lost" and st.phase ~= "unknown" then
            order, seq_start = seq_order(tvb, st)
        end
        -- nil: TCP's flags decide, on this pass and the next (kept in the snapshot: it rarely changes)
        st.unordered = order == nil or nil
        if n == 1 and snapshots[number] == nil then
            slot = number
        else
            slot = number .. "/" .. dk .. "/" .. n
        end
        snapshots[slot] = base_of(st)
        if order ~= nil and order ~= "walk" then
            extras[slot] = {st.skip, order}
        elseif st.skip ~= 0 then
            extras[slot] = st.skip
        end
    end
    if call_dk == dk then
        call_n = n
    else
        calls_more = calls_more or {}
        calls_more[dk] = n
    end

    local cols = pinfo.cols
    cols.protocol = "QMIG"
    -- Lean: nothing shows or filters on this call's items (tshark without -V/-O/-T fields/json and with
    -- no filter, tap or field extractor naming qmig or a qmig field; Wireshark's packet list without
    -- such a column or colouring rule). Wireshark would discard every item (it fakes items of fields no
    -- one references in a tree no one sees), so none is built; state, columns and expert infos (on the
    -- protocol item, added for them) are the same. Checked per call: the GUI's details pane is a visible tree.
    local lean = not tree.visible and not tree:referenced(qmig_handle)
    local root
    if lean then
        root = LAZY
        root.tree, root.tvb, root.item = tree, tvb, nil
    else
        root = tree:add(qmig, tvb())
    end
    local z
    if not lean then
        z = tvb(0, 0)
        root:add(MF.channel, z, st.chan):set_generated()
    end
    if order == "old" or (order == nil and (f_retrans() or f_spurious())) then
        -- TCP hands retransmitted data to the dissector again; the stream state already covers it.
        if not lean then root:add(MF.retrans, tvb(0, math.min(tvb:captured_len(), tvb:reported_len()))) end
        cols.info:append(" [QMIG retransmission]")
        return tvb:reported_len()
    end
    local kinds = {}
    if st.phase == "unknown" and not st.noted then
        root:add_proto_expert_info(E.not_walked, "no migration magic at the start of this stream direction")
        st.noted = true
    end
    local start = 0
    if type(order) == "table" and order.skip then
        start = math.min(order.skip, tvb:reported_len())
        if not lean then root:add(MF.retrans, tvb(0, math.min(start, tvb:captured_len()))) end
    elseif type(order) == "table" and order.hole then
        if st.phase ~= "lost" and st.phase ~= "unknown" and st.skip > order.hole then
            -- the missing bytes are inside a payload skipped by length: the walk stays in step
            st.skip = st.skip - order.hole
            if not lean then
                root:add(MF.data, tvb(0, 0)):append_text(string.format(
                    " (%d bytes of %s payload before this segment not seen here: reordered or not captured)",
                    order.hole, st.skip_label or "the"))
            end
        elseif st.phase ~= "lost" and st.phase ~= "unknown" then
            stop_walking(st, root, E.missing, string.format(
                "%d bytes of this stream direction missing before this segment (reordered or not captured; "
                .. "-o tcp.reassemble_out_of_order:TRUE puts reordered ones back); walking stopped", order.hole))
        end
    end
    walk_tvb(tvb, pinfo, root, st, kinds, slot, start, lean)
    if not visited and order ~= nil then seq_advance(tvb, pinfo, st, seq_start) end
    if not visited and st.postcopy and facts[ckey] and not facts[ckey].postcopy then
        facts[ckey].postcopy = true
        facts_changed(ckey)
    end
    local cn = conns[ckey]
    channel_items(root, z, st, ckey, layer, cn ~= nil and cn.client == src, visited, lean)
    st.started = true
    if not lean then root:append_text(st.mfd_id and string.format(", %s %d", st.chan, st.mfd_id) or ", " .. st.chan) end
    local text = summary(kinds)
    if text ~= "" then cols.info = string.format("QMIG %s: %s", st.chan, text) end
    return tvb:reported_len()
end

function qmig.dissector(tvb, pinfo, tree)
    return dissect(tvb, pinfo, tree, true, nil)
end
qmig_handle = Dissector.get("qmig")

local function heuristic_on(layer)
    return function(tvb, pinfo, tree)
        if dissect(tvb, pinfo, tree, false, layer) == 0 then return false end
        if layer == "tcp" then pinfo.conversation = qmig end
        return true
    end
end

-- Plain TCP (named qmig_tcp: --disable-heuristic qmig_tcp), and the data Wireshark's TLS dissector
-- decrypted (qmig_tls), so a key log (-o tls.keylog_file:FILE) gives decoded migration records.
qmig:register_heuristic("tcp", heuristic_on("tcp"))
qmig:register_heuristic("tls", heuristic_on("tls"))

local tcp_port = DissectorTable.get("tcp.port")
tcp_port:add_for_decode_as(qmig)
DissectorTable.get("tls.port"):add_for_decode_as(qmig)
local registered_port = 0

function qmig.prefs_changed()
    if registered_port ~= 0 then tcp_port:remove(registered_port, qmig) end
    registered_port = qmig.prefs.port
    if registered_port ~= 0 then tcp_port:add(registered_port, qmig) end
end
