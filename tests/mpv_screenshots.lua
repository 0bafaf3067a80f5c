-- mpv script for tests/test_export_mpv.py: a window screenshot of each of the first N frames
-- (script-opts shot-frames=N, shot-prefix=PATH), then quit; any error quits with status 3.
-- Beside each PNG a .txt lists the render passes mpv ran for that frame (property vo-passes):
-- description, tab, the pass's GPU time in ns (timer queries; 0 where the driver has none).
local n = 0
local total = tonumber(mp.get_opt("shot-frames") or "1")
local prefix = mp.get_opt("shot-prefix") or "shot"
local function step()
    mp.commandv("screenshot-to-file", string.format("%s%d.png", prefix, n), "window")
    local passes = mp.get_property_native("vo-passes") or {}
    local f = assert(io.open(string.format("%s%d.txt", prefix, n), "w"))
    for _, pass in ipairs(passes.fresh or {}) do f:write(pass.desc, "\t", tostring(pass.last), "\n") end
    f:close()
    n = n + 1
    if n >= total then mp.command("quit")
    -- an exact seek shows the first frame at or after the target: half a frame early is frame n
    else mp.commandv("seek", tostring((n - 0.5) / mp.get_property_number("container-fps")), "absolute+exact") end
end
mp.register_event("playback-restart", function()
    local ok, err = pcall(step)
    if not ok then mp.msg.error(err); mp.command("quit 3") end
end)
