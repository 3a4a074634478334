// Answers filter-pattern questions with AWS's event-ruler, for tests/filter_differential.rs.
//
// Reads JSON lines {"pattern": "<pattern text>", "event": "<event text>"} on stdin and writes one
// line per input line, in order: `true` or `false` (does the pattern match the event), or
// `error <message>` when event-ruler refuses the pattern (or the line). One JVM answers a
// whole corpus; every case gets a fresh Machine so cases cannot affect each other.
//
// Matching uses Machine.rulesForJSONEvent, event-ruler's array-consistent matcher over the
// event's JSON, which is what Lambda's event filtering runs.

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.BufferedReader;
import java.io.BufferedWriter;
import java.io.InputStreamReader;
import java.io.OutputStreamWriter;
import java.nio.charset.StandardCharsets;
import software.amazon.event.ruler.Machine;

public final class FilterOracle {
    public static void main(String[] args) throws Exception {
        ObjectMapper json = new ObjectMapper();
        BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
        BufferedWriter out = new BufferedWriter(new OutputStreamWriter(System.out, StandardCharsets.UTF_8));
        String line;
        while ((line = in.readLine()) != null) {
            out.write(answer(json, line));
            out.newLine();
        }
        out.flush();
    }

    private static String answer(ObjectMapper json, String line) {
        String pattern;
        String event;
        try {
            JsonNode input = json.readTree(line);
            pattern = input.get("pattern").asText();
            // Text, not a parsed tree: how a number is written matters to event-ruler.
            event = input.get("event").asText();
        } catch (Exception e) {
            return "error bad input line: " + oneLine(e);
        }
        Machine machine = Machine.builder().build();
        try {
            machine.addRule("pattern", pattern);
        } catch (Exception | StackOverflowError e) {
            return "error " + oneLine(e);
        }
        try {
            return Boolean.toString(!machine.rulesForJSONEvent(event).isEmpty());
        } catch (Exception | StackOverflowError e) {
            return "error event: " + oneLine(e);
        }
    }

    private static String oneLine(Throwable e) {
        return (e.getClass().getSimpleName() + ": " + e.getMessage()).replace('\n', ' ').replace('\r', ' ');
    }
}
