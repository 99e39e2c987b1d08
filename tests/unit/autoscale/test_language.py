"""The formula language as data: formula → `results` string or error (batch-semantics-2 §4)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from kiln.autoscale.evaluate import FormulaTooLong, Observations, compile_formula, evaluate
from kiln.autoscale.samples import PERIOD, History
from kiln.autoscale.syntax import FormulaSyntaxError

NOW = datetime(2016, 10, 13, 19, 18, 47, 805000, tzinfo=UTC)  # a Thursday
SEEN = Observations(
    now=NOW, target_dedicated=4, current_dedicated=4, preempted=1, usable=3, slots_per_node=4, target_low_priority=0
)


def _history(minutes: int) -> History:
    """`minutes` of samples, one every 30 s up to now: $ActiveTasks is 9 in the newest and 6 before,
    $RunningTasks 2, $PendingTasks their sum, $PreemptedNodeCount 1, $CPUPercent 10, 20, 30, ... from the newest."""
    history = History()
    count = int(timedelta(minutes=minutes) / PERIOD)
    for k in reversed(range(count)):
        active = 9.0 if k == 0 else 6.0
        history.record(
            NOW - k * PERIOD,
            {
                "$ActiveTasks": active,
                "$RunningTasks": 2.0,
                "$PendingTasks": active + 2,
                "$PreemptedNodeCount": 1.0,
                "$CPUPercent": 10.0 * (k + 1),
            },
        )
    return history


HISTORIES = {"hour": _history(60), "new": History()}
HEAD = "$TargetDedicatedNodes={};$TargetLowPriorityNodes={};$NodeDeallocationOption={}"

DOC_EXAMPLE_1 = """
$curTime = time();
$workHours = $curTime.hour >= 8 && $curTime.hour < 18;
$isWeekday = $curTime.weekday >= 1 && $curTime.weekday <= 5;
$isWorkingWeekdayHour = $workHours && $isWeekday;
$TargetDedicatedNodes = $isWorkingWeekdayHour ? 20:10;
$NodeDeallocationOption = taskcompletion;
"""
PENDING_TASKS_SAMPLE = """
// In this example, the pool size is adjusted based on the number of tasks in the queue.
// Note that both comments and line breaks are acceptable in formula strings.

// Get pending tasks for the past 15 minutes.
$samples = $ActiveTasks.GetSamplePercent(TimeInterval_Minute * 15);
// If we have fewer than 70 percent data points, we use the last sample point,
// otherwise we use the maximum of last sample point and the history average.
$tasks = $samples < 70 ? max(0, $ActiveTasks.GetSample(1)) : max( $ActiveTasks.GetSample(1),
    avg($ActiveTasks.GetSample(TimeInterval_Minute * 15)));
// If number of pending tasks is not 0, set targetVM to pending tasks, otherwise half of current dedicated.
$targetVMs = $tasks > 0 ? $tasks : max(0, $TargetDedicatedNodes / 2);
// The pool size is capped at 20, if target VM value is more than that, set it to 20.
cappedPoolSize = 20;
$TargetDedicatedNodes = max(0, min($targetVMs, cappedPoolSize));
// Set node deallocation mode - keep nodes active only until tasks finish
$NodeDeallocationOption = taskcompletion;
"""
DOC_EXAMPLE_3 = """
$samples = $ActiveTasks.GetSamplePercent(TimeInterval_Minute * 15);
$tasks = $samples < 70 ? max(0,$ActiveTasks.GetSample(1)) :
    max( $ActiveTasks.GetSample(1),avg($ActiveTasks.GetSample(TimeInterval_Minute * 15)));
$cores = $TargetDedicatedNodes * 4;
$extraVMs = (($tasks - $cores) + 3) / 4;
$targetVMs = ($TargetDedicatedNodes + $extraVMs);
$TargetDedicatedNodes = max(0,min($targetVMs,3));
$NodeDeallocationOption = taskcompletion;
"""
START_OF_LIFE = """
$TargetDedicatedNodes = 4;
lifespan         = time() - time("Thu, 13 Oct 2016 19:00:00 GMT");
span             = TimeInterval_Minute * 60;
startup          = TimeInterval_Minute * 10;
ratio            = 50;
$TargetDedicatedNodes = (lifespan > startup ? (max($RunningTasks.GetSample(span, ratio),
    $ActiveTasks.GetSample(span, ratio)) == 0 ? 0 : $TargetDedicatedNodes) : 4);
"""
START_OF_DAY = """
$curTime = time();
$start = $curTime.hour == 8 && $curTime.minute < 15;
$TargetDedicatedNodes = $start ? 10 : $CurrentDedicatedNodes
"""
PREEMPTION = """
maxNumberofVMs = 25;
preempted = max($PreemptedNodeCount.GetSample(180 * TimeInterval_Second, 70));
$TargetLowPriorityNodes = min(maxNumberofVMs, maxNumberofVMs - preempted);
$TargetDedicatedNodes = min(maxNumberofVMs, preempted + $PreemptedNodeCount);
$NodeDeallocationOption = taskcompletion;
"""
NEXTFLOW = """
interval = TimeInterval_Minute * 5;
$samples = $PendingTasks.GetSamplePercent(interval);
$tasks = $samples < 70 ? max(0, $PendingTasks.GetSample(1)) :
    max( $PendingTasks.GetSample(1), avg($PendingTasks.GetSample(interval)));
$targetVMs = $tasks > 0 ? $tasks : max(0, $TargetDedicatedNodes/2);
targetPoolSize = max(0, min($targetVMs, 4));
$TargetDedicatedNodes = targetPoolSize;
$NodeDeallocationOption = taskcompletion;
"""

#: (name, formula, history, results)
RESULTS = [
    (
        "doc example 1: working hours",
        DOC_EXAMPLE_1,
        "new",
        HEAD.format(10, 0, "taskcompletion")
        + ";$curTime=2016-10-13T19:18:47.805Z;$isWeekday=1;$isWorkingWeekdayHour=0;$workHours=0",
    ),
    (
        "pending tasks sample: last sample 9 over an average of 6.1",
        PENDING_TASKS_SAMPLE,
        "hour",
        HEAD.format(9, 0, "taskcompletion") + ";$cappedPoolSize=20;$samples=100;$targetVMs=9;$tasks=9",
    ),
    (
        "doc example 3: parallel tasks, capped at 3",
        DOC_EXAMPLE_3,
        "hour",
        HEAD.format(3, 0, "taskcompletion") + ";$cores=16;$extraVMs=-1;$samples=100;$targetVMs=3;$tasks=9",
    ),
    (
        "doc example 4: after start-up, keep the size while tasks exist",
        START_OF_LIFE,
        "hour",
        HEAD.format(4, 0, "requeue") + ";$lifespan=00:18:47.8050000;$ratio=50;$span=01:00:00;$startup=00:10:00",
    ),
    (
        "start of day: outside 8:00-8:15 keep the current size",
        START_OF_DAY,
        "new",
        HEAD.format(4, 0, "requeue") + ";$curTime=2016-10-13T19:18:47.805Z;$start=0",
    ),
    (
        "preemption: as many dedicated as preempted",
        PREEMPTION,
        "hour",
        HEAD.format(2, 24, "taskcompletion") + ";$maxNumberofVMs=25;$preempted=1",
    ),
    (
        "nextflow's default: pending tasks capped at 4",
        NEXTFLOW,
        "hour",
        HEAD.format(4, 0, "taskcompletion")
        + ";$interval=00:05:00;$samples=100;$targetPoolSize=4;$targetVMs=11;$tasks=11",
    ),
    # precedence and operators
    ("* before +", "a = 1 + 2 * 3", "new", HEAD.format(4, 0, "requeue") + ";$a=7"),
    ("unary minus binds tightest", "a = -2 * 3 - -1", "new", HEAD.format(4, 0, "requeue") + ";$a=-5"),
    ("left-associative -", "a = 10 - 4 - 3; b = 8 / 4 / 2", "new", HEAD.format(4, 0, "requeue") + ";$a=3;$b=1"),
    ("relational before ==", "a = 1 < 2 == 1; b = 2 > 1 != 0", "new", HEAD.format(4, 0, "requeue") + ";$a=1;$b=1"),
    ("&& before ||", "a = 1 || 0 && 0; b = (1 || 0) && 0", "new", HEAD.format(4, 0, "requeue") + ";$a=1;$b=0"),
    ("! on doubles", "a = !0 + 1; b = !5", "new", HEAD.format(4, 0, "requeue") + ";$a=2;$b=0"),
    ("ternary is right-associative", "a = 0 ? 1 : 0 ? 2 : 3", "new", HEAD.format(4, 0, "requeue") + ";$a=3"),
    ("comparisons of strings", 'a = "abc" < "abd"; b = "x" == "x"', "new", HEAD.format(4, 0, "requeue") + ";$a=1;$b=1"),
    (
        "intervals and timestamps",
        "a = 2 * TimeInterval_Hour + TimeInterval_Minute / 2; b = time() + (-6 * TimeInterval_Hour);"
        'c = time("2016-10-14T00:00:00Z") - time(); d = TimeInterval_Day * 1.5 > TimeInterval_Hour * 36;'
        "e = -TimeInterval_100ns; f = TimeInterval_Week + TimeInterval_Millisecond",
        "new",
        HEAD.format(4, 0, "requeue") + ";$a=02:00:30;$b=2016-10-13T13:18:47.805Z;$c=04:41:12.1950000;$d=0"
        ";$e=-00:00:00.0000001;$f=7.00:00:00.0010000",
    ),
    (
        "timestamp members",
        't = time("2016-10-16T23:59:58Z"); y = t.year; m = t.month; d = t.day; w = t.weekday; h = t.hour;'
        "mi = t.minute; s = t.second",
        "new",
        HEAD.format(4, 0, "requeue") + ";$d=16;$h=23;$m=10;$mi=59;$s=58;$t=2016-10-16T23:59:58.000Z;$w=7;$y=2016",
    ),
    (
        "vectors: elementwise with doubles and vectors",
        "v = $CPUPercent.GetSample(3); a = v * 2; b = v + v; c = 100 - v; d = v / 10",
        "hour",
        HEAD.format(4, 0, "requeue") + ";$a=[20,40,60];$b=[20,40,60];$c=[90,80,70];$d=[1,2,3];$v=[10,20,30]",
    ),
    (
        "aggregates flatten a doubleVecList",
        "v = $CPUPercent.GetSample(3); a = avg(v, 40); n = len(v, 1, v); mx = max(v); mn = min(5, v);"
        "r = range(v); s = sum(v); sd = std(v, 40); no = norm(3, 4)",
        "hour",
        HEAD.format(4, 0, "requeue")
        + ";$a=25;$mn=5;$mx=30;$n=7;$no=5;$r=20;$s=60;$sd=11.180339887498949;$v=[10,20,30]",
    ),
    (
        "logarithms, percentile, val, rounding",
        "a = lg(8); b = ln(1); c = log(1000); d = log($CPUPercent.GetSample(2));"
        "e = percentile($CPUPercent.GetSample(5), 50); f = percentile($CPUPercent.GetSample(4), 50);"
        "g = val($CPUPercent.GetSample(3), 2); h = ceil(2.1); i = floor(-2.1);"
        "j = round(2.5); k = round(3.5); l = round($CPUPercent.GetSample(2) / 3)",
        "hour",
        HEAD.format(4, 0, "requeue")
        + ";$a=3;$b=0;$c=3;$d=[1,1.3010299956639813];$e=30;$f=25;$g=30;$h=3;$i=-3;$j=2;$k=4;$l=[3,7]",
    ),
    ("rand() is between 0 and 1", "a = rand() >= 0 && rand() < 1", "new", HEAD.format(4, 0, "requeue") + ";$a=1"),
    (
        "sample methods",
        "c = $CPUPercent.Count(); b = $CPUPercent.HistoryBeginTime(); p = $CPUPercent.GetSamplePeriod();"
        "q = $CPUPercent.GetSamplePercent(TimeInterval_Hour * 2); r = $CPUPercent.GetSamplePercent(time() + "
        "-TimeInterval_Minute, time()); w = $ActiveTasks.GetSample(TimeInterval_Minute * 2, TimeInterval_Minute)",
        "hour",
        HEAD.format(4, 0, "requeue") + ";$b=2016-10-13T18:19:17.805Z;$c=120;$p=00:00:30;$q=50;$r=100;$w=[6,6]",
    ),
    (
        "an empty window without a percent: no samples fails, a count of 0 does not",
        "c = $CPUPercent.Count(); q = $CPUPercent.GetSamplePercent(TimeInterval_Minute * 10)",
        "new",
        HEAD.format(4, 0, "requeue") + ";$c=0;$q=0",
    ),
    # targets and service variables
    ("a fractional target truncates", "$TargetDedicatedNodes = 2.7", "new", HEAD.format(2, 0, "requeue")),
    ("0.5 nodes is none", "$TargetDedicatedNodes = 0.5", "new", HEAD.format(0, 0, "requeue")),
    ("a negative target is 0", "$TargetDedicatedNodes = -3", "new", HEAD.format(0, 0, "requeue")),
    (
        "reading a target before assigning it",
        "$TargetDedicatedNodes = $TargetDedicatedNodes / 2",
        "new",
        HEAD.format(2, 0, "requeue"),
    ),
    ("legacy aliases", "$TargetDedicated = 5; $TargetLowPriority = 3", "new", HEAD.format(5, 3, "requeue")),
    (
        "the full name wins over its alias",
        "$TargetDedicatedNodes = 6; $TargetDedicated = 5; x = $TargetDedicated",
        "new",
        HEAD.format(6, 0, "requeue") + ";$x=5",
    ),
    (
        "read-only scalars",
        "a = $CurrentDedicatedNodes; b = $CurrentLowPriorityNodes; c = $PreemptedNodeCount; d = $UsableNodeCount;"
        "e = $TaskSlotsPerNode",
        "new",
        HEAD.format(4, 0, "requeue") + ";$a=4;$b=0;$c=1;$d=3;$e=4",
    ),
    ("every deallocation word", "$NodeDeallocationOption = retaineddata", "new", HEAD.format(4, 0, "retaineddata")),
    ("terminate", "$NodeDeallocationOption = 1 ? terminate : requeue", "new", HEAD.format(4, 0, "terminate")),
    (
        "names are case-sensitive",
        "$targetdedicatednodes = 9; Max = 2",
        "new",
        HEAD.format(4, 0, "requeue") + ";$Max=2;$targetdedicatednodes=9",
    ),
    (
        "user variables sort alphabetically, printed with $",
        "zeta = 1; $Alpha = 2; beta = 3",
        "new",
        HEAD.format(4, 0, "requeue") + ";$Alpha=2;$beta=3;$zeta=1",
    ),
    ("reassignment keeps the last value", "a = 1; a = a + 1;", "new", HEAD.format(4, 0, "requeue") + ";$a=2"),
    ("strings print bare", 'a = "x y"', "new", HEAD.format(4, 0, "requeue") + ";$a=x y"),
    (
        "doubles print shortest",
        "a = 0.1 + 0.2; b = 1e20; c = 1 / 3",
        "new",
        HEAD.format(4, 0, "requeue") + ";$a=0.30000000000000004;$b=1E+20;$c=0.3333333333333333",
    ),
    (
        "stop() keeps what came before",
        "$TargetDedicatedNodes = 7; x = stop(); $TargetDedicatedNodes = 1",
        "new",
        HEAD.format(7, 0, "requeue"),
    ),
    (
        "a target past int32 is the largest (a pool's node counts are int32)",
        "$TargetDedicatedNodes = 1e300; $TargetLowPriorityNodes = 2147483648",
        "new",
        HEAD.format(2**31 - 1, 2**31 - 1, "requeue"),
    ),
]

#: (name, formula, history, error code, detail) — the pool keeps its targets, `results` shows what ran.
ERRORS = [
    (
        "a new pool has no samples",
        PENDING_TASKS_SAMPLE,
        "new",
        "InsufficientSampleData",
        "Line 9, Col 33: Insufficient data from data set: $ActiveTasks wanted 100%, received 0%",
    ),
    (
        "doc example 4 on a new pool",
        START_OF_LIFE,
        "new",
        "InsufficientSampleData",
        "Line 7, Col 52: Insufficient data from data set: $RunningTasks wanted 50%, received 0%",
    ),
    (
        "a window with too few samples",
        "a = $ActiveTasks.GetSample(TimeInterval_Hour * 2, 70)",
        "hour",
        "InsufficientSampleData",
        "Line 1, Col 5: Insufficient data from data set: $ActiveTasks wanted 70%, received 50%",
    ),
    (
        "more samples than exist",
        "a = $ActiveTasks.GetSample(121)",
        "hour",
        "InsufficientSampleData",
        "Line 1, Col 5: Insufficient data from data set: $ActiveTasks wanted 100%, received 99.2%",
    ),
    (
        "an empty window without a percent",
        "a = avg($ActiveTasks.GetSample(TimeInterval_Minute * 10))",
        "new",
        "InsufficientSampleData",
        "Line 1, Col 9: Insufficient data from data set: $ActiveTasks wanted 100%, received 0%",
    ),
    (
        "division by zero",
        "a = 1;\nb = a / (a - 1)",
        "new",
        "AutoScalingFormulaEvaluationError",
        "Line 2, Col 5: Division by zero.",
    ),
    (
        "a double plus a string",
        'a = 1 + "x"',
        "new",
        "AutoScalingFormulaEvaluationError",
        "Line 1, Col 5: Operator + does not apply to a double and a string.",
    ),
    (
        "a timestamp minus an interval is not in the table",
        "a = time() - TimeInterval_Hour",
        "new",
        "AutoScalingFormulaEvaluationError",
        "Line 1, Col 5: Operator - does not apply to a timestamp and a timeinterval.",
    ),
    (
        "comparing a double with a timestamp",
        "a = time() > 3",
        "new",
        "AutoScalingFormulaEvaluationError",
        "Line 1, Col 5: Operator > does not compare a timestamp and a double.",
    ),
    (
        "a sampled variable used as a double",
        "a = $CPUPercent + 1",
        "new",
        "AutoScalingFormulaEvaluationError",
        "Line 1, Col 5: Operator + does not apply to a sampled service variable and a double.",
    ),
    (
        "an undefined variable",
        "a = b + 1",
        "new",
        "AutoScalingFormulaEvaluationError",
        "Line 1, Col 5: b is not defined.",
    ),
    (
        "a deallocation option that is not one",
        "$NodeDeallocationOption = 2",
        "new",
        "AutoScalingFormulaEvaluationError",
        "Line 1, Col 1: $NodeDeallocationOption takes requeue | terminate | taskcompletion | retaineddata,"
        " not a double.",
    ),
    (
        "val out of range",
        "a = val($CPUPercent.GetSample(2), 2)",
        "hour",
        "AutoScalingFormulaEvaluationError",
        "Line 1, Col 5: val(): index 2 is outside the doubleVec of 2 values.",
    ),
    (
        "avg of nothing",
        "a = avg($CPUPercent.GetSample(0))",
        "hour",
        "AutoScalingFormulaEvaluationError",
        "Line 1, Col 5: avg() of an empty list.",
    ),
    (
        "log of 0",
        "a = log(0)",
        "new",
        "AutoScalingFormulaEvaluationError",
        "Line 1, Col 5: log() of 0.0: the logarithm needs a positive number.",
    ),
    (
        "vectors of different lengths",
        "a = $CPUPercent.GetSample(2) + $CPUPercent.GetSample(3)",
        "hour",
        "AutoScalingFormulaEvaluationError",
        "Line 1, Col 5: Operator + needs doubleVecs of one length, not 2 and 3.",
    ),
    (
        "a target that is not a double",
        "$TargetDedicatedNodes = time()",
        "new",
        "AutoScalingFormulaEvaluationError",
        "Line 1, Col 1: $TargetDedicatedNodes takes a double, not a timestamp.",
    ),
    (
        "a bad time string",
        'a = time("yesterday")',
        "new",
        "AutoScalingFormulaEvaluationError",
        'Line 1, Col 5: time(): "yesterday" is neither a W3C-DTF nor an RFC 1123 date and time.',
    ),
    # found by tests/e2e/test_fuzz.py: each was a 500 from evaluateautoscale
    (
        "a timeinterval past TimeSpan's range",
        "a = $PendingTasks.GetSample(TimeInterval_Day * 99999999999)",
        "new",
        "AutoScalingFormulaEvaluationError",
        "Line 1, Col 29: The timeinterval is out of range.",
    ),
    (
        "an infinite timeinterval",
        "a = TimeInterval_Second * (1e308 * 10)",
        "new",
        "AutoScalingFormulaEvaluationError",
        "Line 1, Col 5: The timeinterval is out of range.",
    ),
    (
        "a window that starts before year 1",
        "a = $PendingTasks.GetSample(TimeInterval_Day * 9999999)",
        "new",
        "AutoScalingFormulaEvaluationError",
        "Line 1, Col 1: A value is out of range: date value out of range.",
    ),
    (
        "a sample count that is not a number",
        "a = $PendingTasks.GetSample(1e308 * 10 - 1e308 * 10)",
        "new",
        "AutoScalingFormulaEvaluationError",
        "Line 1, Col 1: A value is out of range: cannot convert float NaN to integer.",
    ),
]

#: (name, formula, message) — refused at create/enable.
SYNTAX_ERRORS = [
    ("an operand missing", "a = 1 +", "Line 1, Col 8: Unexpected end of the formula"),
    ("two statements without ;", "a = 1\nb = 2", "Line 2, Col 1: Unexpected 'b'"),
    ("an unclosed parenthesis", "a = (1", "Line 1, Col 7: Unexpected end of the formula; expected ')'."),
    ("a character the language lacks", "a = 1 # 2", "Line 1, Col 7: Unexpected character '#'."),
    ("an unterminated string", 'a = "x', "Line 1, Col 5: Unexpected character '\"' (an unterminated string?)."),
    ("no name", "= 3", "Line 1, Col 1: Unexpected '='"),
    ("an unknown function", "a = 1;\n  b = foo(1)", "Line 2, Col 7: Unknown function foo."),
    ("a function's arguments", "a = max()", "Line 1, Col 5: max takes at least 1 arguments, not 0."),
    ("an unknown method", "a = $CPUPercent.GetSamples(1)", "Line 1, Col 5: Unknown method GetSamples."),
    ("an unknown member", "a = time().days", "Line 1, Col 5: A timestamp has no member days"),
    ("a read-only variable", "$CPUPercent = 1", "Line 1, Col 1: $CPUPercent is a read-only service variable."),
    ("an empty formula", "// nothing\n", "Line 1, Col 1: The formula has no statement."),
    ("101 statements", "a = 1;" * 101, "Line 1, Col 601: The formula has 101 statements; the limit is 100."),
]


@pytest.mark.parametrize(("name", "formula", "history", "results"), RESULTS, ids=[r[0] for r in RESULTS])
def test_results(name: str, formula: str, history: str, results: str) -> None:
    run = evaluate(compile_formula(formula), SEEN, HISTORIES[history])
    assert run.error is None
    assert run.results == results
    assert run.timestamp == NOW


@pytest.mark.parametrize(("name", "formula", "history", "code", "detail"), ERRORS, ids=[e[0] for e in ERRORS])
def test_runtime_errors(name: str, formula: str, history: str, code: str, detail: str) -> None:
    run = evaluate(compile_formula(formula), SEEN, HISTORIES[history])
    assert run.error is not None
    assert (run.error.code, dict(run.error.values)["Message"]) == (code, detail)
    assert (run.target_dedicated, run.target_low_priority) == (4, 0)
    assert run.results.startswith(HEAD.format(4, 0, "requeue"))


def test_an_insufficient_sample_error_reads_as_azures() -> None:
    run = evaluate(compile_formula(PENDING_TASKS_SAMPLE), SEEN, History())
    assert run.error is not None
    assert run.error.doc()["message"] == "Autoscale evaluation failed due to insufficient sample data"
    assert run.results == HEAD.format(4, 0, "requeue") + ";$samples=0"


@pytest.mark.parametrize(("name", "formula", "message"), SYNTAX_ERRORS, ids=[s[0] for s in SYNTAX_ERRORS])
def test_syntax_errors(name: str, formula: str, message: str) -> None:
    with pytest.raises(FormulaSyntaxError) as caught:
        compile_formula(formula)
    assert str(caught.value).startswith(message)


def test_a_formula_over_8_kb_is_too_long() -> None:
    text = "a = 1;" + "// padding\n" * 745
    assert len(text) > 8192
    with pytest.raises(FormulaTooLong):
        compile_formula(text)
    compile_formula(text[:8192])
