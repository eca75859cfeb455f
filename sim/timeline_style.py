"""The look of the HTML timeline: one table of marks (colour, shape, legend text), its CSS, the
legend built from it, and the page's script.

Every element drawn in a lane has, as its first class, a key of :data:`MARKS`, so the legend can
show exactly the marks a run uses, and a test can check that nothing drawn is missing from it.
The colours are chosen so that any two marks of the same shape and dash differ clearly on white.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Mark:
    """One kind of drawn element.

    Attributes:
        shape: ``rect`` (a filled span) or ``line`` (a tick or a stroked path).
        colour: its fill (rect) or stroke (line), ``#rrggbb``; ``""`` takes the owning
            process's colour (the ``pN`` class beside it).
        text: the legend's words for it.
        group: the legend row: ``processes``, ``jobs`` or ``run``.
        opacity: for rects, how much of the colour covers what lies behind.
        width: for lines, the stroke width in px.
        dash: for lines, an SVG dash array (``""`` for solid).
        also: other classes drawn the same way and explained by this entry.
    """

    shape: str
    colour: str
    text: str
    group: str
    opacity: float = 1.0
    width: float = 2.0
    dash: str = ""
    also: tuple[str, ...] = ()


_P, _J, _R = "processes", "jobs", "run"

#: Every mark the timeline draws, keyed by its CSS class, in legend order.
MARKS: dict[str, Mark] = {
    # process lanes
    "alive": Mark("rect", "", "process alive (colour = process)", _P, 0.45),
    "closing": Mark("rect", "#4dd0e1", "closing (shutdown → exit)", _P),
    "blk": Mark("rect", "#222222", "loop blocked / GC pause", _P, 0.8),
    "down": Mark("line", "#555555", "slot empty (no process)", _P, dash="4 3"),
    "f-partition": Mark("rect", "#9c27b0", "partition (requests dropped)", _P, 0.5),
    "f-asymmetric": Mark("rect", "#ff6a00", "replies lost", _P, 0.5),
    "f-latency": Mark("rect", "#ffeb3b", "latency spike", _P, 0.6),
    "f-finish-lost": Mark("rect", "#00897b", "finishes lost", _P, 0.5),
    "m-crash": Mark(
        "line",
        "#ff1a1a",
        "crash (kill -9; on a job: of its lock's owner) / store restart",
        _P,
        width=3,
    ),
    "m-fault": Mark("line", "#ff9a9a", "fault with no effect (no live process)", _P, dash="2 2"),
    "m-shut": Mark("line", "#3fa9f5", "shutdown (forced close)", _P),
    "m-exit": Mark("line", "#8d6e63", "exited", _P),
    "m-chk": Mark("line", "#00838f", "stall check", _P),
    "m-err": Mark("line", "#d4006a", "error / lock lost", _P),
    "m-other": Mark("line", "#b0b0b0", "other (request dropped, reply lost, …)", _P),
    "adds": Mark("rect", "#5aa55a", "jobs added (producer)", _P),
    "s-act": Mark("line", "#0d47a1", "store: jobs active", _P, width=1.5),
    "s-que": Mark("line", "#999999", "store: jobs waiting", _P, width=1.5, dash="3 2"),
    # job lanes
    "life": Mark("rect", "#e6e6e6", "job waiting", _J),
    "dly": Mark("rect", "#a6c8ef", "delayed", _J),
    "lk": Mark("rect", "", "lock held (colour = process)", _J),
    "lx": Mark("rect", "", "lock expired, job still active", _J, 0.35),
    "rn": Mark("line", "#ffffff", "lock renewed", _J, width=0.6),
    "m-exec": Mark("line", "#333333", "execution starts", _J, width=1),
    "m-done": Mark("line", "#1a9641", "completed", _J),
    "m-retry": Mark("line", "#c9a800", "retry (attempt failed)", _J),
    "m-fail": Mark("line", "#b2002d", "failed for good", _J, width=3),
    "m-stall": Mark("line", "#ff7f00", "stall recovered", _J, width=3),
    "m-rej": Mark("line", "#e100e1", "late finish rejected", _J, width=3),
    "m-rel": Mark("line", "#1f4fff", "released by a closing worker", _J),
    "m-rnf": Mark("line", "#7a2fd0", "lock renewal failed", _J),
    "m-fin": Mark("line", "#00bfa5", "finish accepted", _J, width=1),
    # the whole run
    "ph-s": Mark("rect", "#e57373", "safety phase (faults may strike)", _R),
    "ph-l": Mark("rect", "#b7e1b5", "liveness phase (faults healed)", _R, also=("bg-l",)),
    "m-heal": Mark("line", "#005a00", "heal", _R, dash="4 3"),
    "m-end": Mark("line", "#000000", "end of run", _R, dash="1 3"),
}

#: The legend entry of each class drawn (aliases included).
LEGEND_KEY = {alias: key for key, mark in MARKS.items() for alias in (key, *mark.also)}


def process_colour(slot: int, generation: int) -> str:
    """The colour of a worker process: a hue per slot, a lightness per restart."""
    hue = (slot * 137.508 + 200) % 360
    return f"hsl({hue:.0f},62%,{(62, 72, 52)[generation % 3]}%)"


def _rule(cls: str, mark: Mark) -> str:
    if mark.shape == "rect":
        fill = f"fill:{mark.colour};" if mark.colour else ""
        return f".{cls}{{{fill}opacity:{mark.opacity:g}}}"
    dash = f";stroke-dasharray:{mark.dash}" if mark.dash else ""
    return f"#tl .{cls},.lg .{cls}{{stroke:{mark.colour};stroke-width:{mark.width:g}{dash}}}"


def css() -> str:
    """The page's style sheet (the per-run process colours come separately)."""
    rules = [_rule(cls, mark) for key, mark in MARKS.items() for cls in (key, *mark.also)]
    return _BASE_CSS + "\n".join(rules) + "\n"


def legend(used: set[str], p0: str) -> str:
    """The legend: one swatch per mark in ``used`` (legend keys), grouped by lane kind.

    Args:
        used: the legend keys of the elements drawn.
        p0: the class giving a process colour to the swatches coloured by process.

    Returns:
        HTML: one ``div.legend`` with a row per group; each entry carries ``data-cls``.
    """
    rows = []
    for group in (_P, _J, _R):
        entries = []
        for key, mark in MARKS.items():
            if mark.group != group or key not in used:
                continue
            cls = f"{key} {p0}" if not mark.colour else key
            if mark.shape == "rect":
                swatch = f'<rect class="{cls}" width="16" height="10"/>'
            elif key == "rn":
                swatch = f'<rect class="lk {p0}" width="16" height="10"/>'
                swatch += f'<line class="{cls}" x1="8" x2="8" y1="0" y2="10"/>'
            else:
                swatch = f'<line class="{cls}" x1="8" x2="8" y1="0" y2="10"/>'
                if mark.dash:
                    swatch = f'<line class="{cls}" x1="0" x2="16" y1="5" y2="5"/>'
            entries.append(
                f'<span class="lg" data-cls="{" ".join((key, *mark.also))}">'
                f'<svg width="16" height="10">{swatch}</svg> {mark.text}</span>'
            )
        if entries:
            rows.append(f"<div><b>{group}</b> {' '.join(entries)}</div>")
    return f'<div class="legend">{"".join(rows)}</div>'


CONTROLS = (
    '<div class="ctl">zoom <button data-z="0.5">−</button><button data-z="2">+</button>'
    '<button data-z="0">fit</button> · jobs <select id="jf"><option value="">all</option>'
    '<option value="*">interesting</option><option>stall</option><option>retry</option>'
    "<option>rejected</option><option>failed</option><option>unfinished</option>"
    "<option>reexec</option>"
    '<option>renewfail</option></select> <input id="jq" size="14" placeholder="job ids 1 2 3">'
    ' <span id="jn"></span> · hover anything for its trace lines</div>'
)

_BASE_CSS = """
body{margin:0;font:12px system-ui,sans-serif;display:flex;flex-direction:column;height:100vh}
header{padding:6px 10px;border-bottom:1px solid #ccc;background:#fafafa}
h1{font-size:15px;margin:0 0 4px}h1 small{font-weight:normal;color:#555}
.cells span{margin-right:12px;white-space:nowrap}.viol{color:#b00;margin:2px 0}
.faults{columns:4;margin:2px 0;font-family:monospace}.faults .off{color:#aaa}
.legend{margin-top:4px}.legend b{display:inline-block;width:70px;color:#555}
.lg{margin-right:10px;white-space:nowrap}.legend svg{vertical-align:middle}
#sc{flex:1;overflow:auto;position:relative}
#tl text{font:10px monospace}#tl .jt{fill:#444;text-anchor:end}
#tl .pt{text-anchor:end;font-weight:bold;stroke:#0003;stroke-width:.3}
#tl .sec{font:bold 10px system-ui;fill:#333}.bgw{fill:#fff}
#tl line,#tl path{vector-effect:non-scaling-stroke}#ticks line{stroke:#333;stroke-width:1}
.s-act,.s-que{fill:none}#tl .bg-l{fill:#eef8ec}.jl:hover .life{fill:#ffe08a}#hlb{fill:#ffe9a0}
.ctl button{font-size:11px}.ctl{margin-top:4px}
#attn{margin-top:4px;max-height:8.6em;overflow:auto;border:1px solid #ddd;background:#fff;
padding:3px 6px}#attn table{border-collapse:collapse}#attn td{padding:1px 8px 1px 0;
vertical-align:top}#attn .o{font-weight:bold;white-space:nowrap}#attn a{white-space:nowrap}
.o-violation{color:#fff;background:#b2002d}.o-failed,.o-unfinished{color:#b2002d}.o-recovered{color:#c25e00}.o-rejected{color:#a000a0}
#tl .o-failed,#tl .o-unfinished,#tl .o-violation{fill:#b2002d}#tl .o-recovered{fill:#c25e00}
#tl .o-rejected{fill:#a000a0}#tl .jt[class*=o-]{font-weight:bold}
"""

SCRIPT = """
(function(){
const sc=document.getElementById('sc'),svg=document.getElementById('tl');
const D=svg.dataset,W=+D.w,pps=+D.pps,end=+D.end,LW=+D.lw,AH=+D.ah,JT=+D.jt,JH=+D.jh;
const zx=document.getElementById('zx'),phz=document.getElementById('phz');
const ticks=document.getElementById('ticks'),axis=document.getElementById('axis');
const labels=document.getElementById('labels'),corner=document.getElementById('corner');
const lanes=[...document.querySelectorAll('g.jl')],jl=[...document.querySelectorAll('text.jt')];
const STEPS=[0.1,0.2,0.5,1,2,5,10,15,30,60,120,300,600,1200,3600];
let z=1;const fitZ=()=>Math.max(0.25,(sc.clientWidth-LW-24)/W);
function drawAxis(){
  const s=STEPS.find(v=>v*pps*z>=70)||3600;let h='';
  for(let n=0;n*s<=end;n++){const x=(LW+n*s*pps*z).toFixed(1);
    h+=`<line x1="${x}" x2="${x}" y1="${AH-6}" y2="${AH}"/>`+
       `<text x="${(+x+2).toFixed(1)}" y="${AH-8}">${+(n*s).toFixed(1)}s</text>`;}
  ticks.innerHTML=h;}
function setZ(nz,mid){
  z=Math.min(256,Math.max(0.25,nz));
  zx.setAttribute('transform',`scale(${z},1)`);phz.setAttribute('transform',`scale(${z},1)`);
  svg.setAttribute('width',LW+W*z+20);drawAxis();
  sc.scrollLeft=mid*z+LW-sc.clientWidth/2;}
function zoom(f){
  const mid=(sc.scrollLeft+sc.clientWidth/2-LW)/z;setZ(f===0?fitZ():z*f,mid);}
document.querySelectorAll('button[data-z]').forEach(b=>b.onclick=()=>zoom(+b.dataset.z));
sc.addEventListener('scroll',()=>{
  labels.setAttribute('transform',`translate(${sc.scrollLeft},0)`);
  axis.setAttribute('transform',`translate(0,${sc.scrollTop})`);
  corner.setAttribute('y',sc.scrollTop);});
const jf=document.getElementById('jf'),jq=document.getElementById('jq');
function filter(){
  const tag=jf.value,ids=new Set(jq.value.split(/[\\s,]+/).filter(Boolean));let y=JT,n=0;
  lanes.forEach((g,i)=>{const t=g.dataset.t;
    const show=(!tag||(tag==='*'?t!=='':t.split(' ').includes(tag)))&&
      (!ids.size||ids.has(g.dataset.j));
    g.style.display=jl[i].style.display=show?'':'none';
    if(show){g.setAttribute('transform',`translate(0,${y})`);jl[i].setAttribute('y',AH+y+(JH-2)/2+4);
      y+=JH;n++;}});
  svg.setAttribute('height',AH+y+10);
  const band=document.getElementById('hlb');if(band)band.style.display='none';
  document.getElementById('jn').textContent=`${n} of ${lanes.length} jobs shown`;}
jf.onchange=filter;jq.oninput=filter;
function show(id){
  const g=document.getElementById('job-'+id);if(!g)return;
  if(g.style.display==='none'){jf.value='';jq.value='';filter();}
  const a=+g.dataset.a,d=+g.dataset.d,span=Math.max(d-a,1)*pps/1000;
  setZ((sc.clientWidth-LW)*0.6/span,((a+d)/2)*pps/1000);
  const ty=+g.getAttribute('transform').match(/,([-\\d.]+)/)[1];
  sc.scrollTop=Math.max(0,ty+AH-sc.clientHeight/2);
  let band=document.getElementById('hlb');
  if(!band){band=document.createElementNS(svg.namespaceURI,'rect');band.id='hlb';
    zx.insertBefore(band,zx.firstChild);}
  band.setAttribute('x',0);band.setAttribute('width',W);band.setAttribute('y',ty-2);
  band.setAttribute('height',JH+2);band.style.display='';}
document.querySelectorAll('#attn a[data-j]').forEach(a=>a.onclick=e=>{
  e.preventDefault();show(a.dataset.j);});
zoom(0);
// after the browser's own jump to the anchor, which would put the lane under the axis
const hash=location.hash.match(/^#job-(.+)$/);
if(hash)addEventListener('load',()=>setTimeout(()=>show(decodeURIComponent(hash[1])),0));
})();
"""

__all__ = ["CONTROLS", "LEGEND_KEY", "MARKS", "SCRIPT", "Mark", "css", "legend", "process_colour"]
