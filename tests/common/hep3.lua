-- HEPv3 for tshark, for tests/hep.rs. Wireshark 4.0 (Debian 12) has no HEP dissector, so the
-- test brings its own reading of the format: written from the HEP3 chunk table (not from our
-- encoder), it walks the chunks and hands the payload to tshark's own SIP dissector, so that
-- sip.Call-ID, sip.CSeq ... come out of what the collector would receive.
--
-- Use: tshark -X lua_script:hep3.lua -X lua_script1:PORT -r capture.pcapng -Y hep3 ...
local port = tonumber((...)) or 9060

local hep = Proto("hep3", "HEP version 3")
local F = {
  len = ProtoField.uint16("hep3.len", "Total length"),
  family = ProtoField.uint8("hep3.family", "IP family"),
  proto = ProtoField.uint8("hep3.proto", "IP protocol"),
  src = ProtoField.string("hep3.src", "Source address"),
  dst = ProtoField.string("hep3.dst", "Destination address"),
  sport = ProtoField.uint16("hep3.sport", "Source port"),
  dport = ProtoField.uint16("hep3.dport", "Destination port"),
  ts = ProtoField.uint32("hep3.ts", "Seconds"),
  tus = ProtoField.uint32("hep3.tus", "Microseconds"),
  ptype = ProtoField.uint8("hep3.ptype", "Protocol type"),
  capid = ProtoField.uint32("hep3.capid", "Capture agent ID"),
  node = ProtoField.string("hep3.node", "Node name"),
  cid = ProtoField.string("hep3.cid", "Correlation ID"),
  bad = ProtoField.string("hep3.bad", "Malformed"),
}
hep.fields = { F.len, F.family, F.proto, F.src, F.dst, F.sport, F.dport, F.ts, F.tus,
               F.ptype, F.capid, F.node, F.cid, F.bad }

local sip = Dissector.get("sip")

function hep.dissector(tvb, pinfo, tree)
  if tvb:len() < 6 or tvb(0, 4):string() ~= "HEP3" then
    return 0
  end
  local total = tvb(4, 2):uint()
  local t = tree:add(hep, tvb(0, math.min(total, tvb:len())))
  t:add(F.len, tvb(4, 2))
  if total ~= tvb:len() then
    t:add(F.bad, "length field " .. total .. " but datagram " .. tvb:len())
    return tvb:len()
  end
  local off = 6
  local payload
  while off < total do
    if off + 6 > total then
      t:add(F.bad, "chunk header cut at " .. off)
      break
    end
    local vendor, kind, clen = tvb(off, 2):uint(), tvb(off + 2, 2):uint(), tvb(off + 4, 2):uint()
    if clen < 6 or off + clen > total then
      t:add(F.bad, "chunk " .. kind .. " length " .. clen .. " at " .. off)
      break
    end
    local n = clen - 6
    if vendor == 0 and n > 0 then
      local v = tvb(off + 6, n)
      if kind == 1 then t:add(F.family, v)
      elseif kind == 2 then t:add(F.proto, v)
      elseif kind == 3 then t:add(F.src, v, tostring(v:ipv4()))
      elseif kind == 4 then t:add(F.dst, v, tostring(v:ipv4()))
      elseif kind == 5 then t:add(F.src, v, tostring(v:ipv6()))
      elseif kind == 6 then t:add(F.dst, v, tostring(v:ipv6()))
      elseif kind == 7 then t:add(F.sport, v)
      elseif kind == 8 then t:add(F.dport, v)
      elseif kind == 9 then t:add(F.ts, v)
      elseif kind == 10 then t:add(F.tus, v)
      elseif kind == 11 then t:add(F.ptype, v)
      elseif kind == 12 then t:add(F.capid, v)
      elseif kind == 15 then payload = v
      elseif kind == 17 then t:add(F.cid, v, v:string())
      elseif kind == 19 then t:add(F.node, v, v:string())
      end
    end
    off = off + clen
  end
  if payload then
    sip:call(payload:tvb(), pinfo, tree)
  end
  return total
end

DissectorTable.get("udp.port"):add(port, hep)
